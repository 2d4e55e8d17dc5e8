"""Catch-up for a client that comes back: the stored kills after its last seq, filtered by its
channel, then the live ones, with no gap and no duplicate between the two.

The channel is subscribed and the socket's live kills are held back *before* the store is read.
The replay sends the stored kills up to the last seq it saw when it started; then the held live
frames go out, except those the replay covered; then live delivery resumes. A kill committed
while the replay runs is either read by it, or held, or both (and then sent once). A kill the
socket already got live on another channel (hub.Delivered) is not sent again.

The kills come from a KillLog: the Store on the writer, the Redis Stream on an edge
(killboard/bus/stream.py), which may no longer reach back to `since` (then `recovered: false`).

Replays share their work (`Replays`): a page of stored kills is rendered into frames once, kept
in a small byte-bounded cache for the other replays reading the same kills, and only a few
replays read the database at once. A replay's frames count toward its socket's byte budget
(hub.Hub.fits): it waits for room, and a socket that takes nothing for STALL_TIMEOUT is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import ujson
from aiohttp import WSCloseCode

from ..kill.frames import body_of, kill_frame
from ..kill.langs import Langs
from ..kill.topics import ALL, Condition, KillFacts, kill_facts
from ..storage.store import Store
from .hub import Hub
from .subscriber import Subscriber

log = logging.getLogger(__name__)

# Kills read from the store at a time: about 1 MB of frames for average kills.
PAGE = 32
# A client that takes no replayed frame for this long is not reading: drop it, as a live laggard.
STALL_TIMEOUT = 10.0
# Frames of stored kills kept for concurrent replays, and for how long: player names are read
# on every render (names filled in later show up), so a frame is not reused for long.
CACHE_BYTES = 16 * 1024 * 1024
CACHE_SECONDS = 30.0


class KillLog(Protocol):
    """Where a replay reads stored kills: the Store on a writer, the Redis Stream on an edge."""

    async def bounds(self, since: int) -> tuple[int, int]:
        """(floor, end): the log holds every kill after `floor`; the replay reads up to `end`,
        and every kill after `end` reaches the socket live."""
        ...

    async def seqs_after(self, seq: int, upto: int, limit: int) -> list[int]:
        """The seqs of up to `limit` kills with `seq` < seq <= `upto`, oldest first."""
        ...

    async def by_seqs(self, seqs: Sequence[int]) -> Sequence[tuple[int, bytes, KillFacts | None]]:
        """The kills with these seqs still in the log, oldest first: (seq, JSON body, match keys
        if the log knows them)."""
        ...


class LogUnavailable(Exception):
    """The log cannot be read right now; the client is asked to come back with its `since`."""


@dataclass(frozen=True, slots=True)
class StoreLog:
    """The Store as a KillLog: everything stored is there (retention is the REST API's to report)."""

    store: Store

    async def bounds(self, since: int) -> tuple[int, int]:
        return 0, await self.store.last_seq()

    async def seqs_after(self, seq: int, upto: int, limit: int) -> list[int]:
        return await self.store.seqs_after(seq, upto, limit)

    async def by_seqs(self, seqs: Sequence[int]) -> Sequence[tuple[int, bytes, KillFacts | None]]:
        return [(row.seq, row.body, None) for row in await self.store.by_seqs(seqs)]


@dataclass(slots=True)
class Cached:
    frame: bytes
    facts: KillFacts | None
    made: float
    # The frame as sockets of other kinds take it ((languages, deflate window) -> frame), made
    # once for every replay that shares this entry (killboard/live/wire.py).
    variants: dict[tuple[Langs, int], bytes] | None = None


class FrameCache:
    """Kill frames of stored kills by seq, least recently stored out first, at most `limit` bytes."""

    def __init__(self, limit: int, ttl: float) -> None:
        self.limit = limit
        self.ttl = ttl
        self.nbytes = 0
        self._frames: OrderedDict[int, Cached] = OrderedDict()

    def __len__(self) -> int:
        return len(self._frames)

    def get(self, seq: int) -> Cached | None:
        entry = self._frames.get(seq)
        if entry is not None and time.monotonic() - entry.made > self.ttl:
            self._pop(seq)
            return None
        return entry

    def put(self, seq: int, frame: bytes) -> Cached:
        entry = Cached(frame, None, time.monotonic())
        if seq in self._frames:
            self._pop(seq)
        self._frames[seq] = entry
        self.nbytes += len(frame)
        while self.nbytes > self.limit and self._frames:
            self._pop(next(iter(self._frames)))
        return entry

    def clear(self) -> None:
        self._frames.clear()
        self.nbytes = 0

    def grew(self, size: int) -> None:
        """An entry got a variant of `size` bytes: it counts toward the limit too."""
        self.nbytes += size
        while self.nbytes > self.limit and self._frames:
            self._pop(next(iter(self._frames)))

    def _pop(self, seq: int) -> None:
        entry = self._frames.pop(seq)
        self.nbytes -= len(entry.frame) + sum(map(len, (entry.variants or {}).values()))


class Replays:
    """What all replays share: the frame cache, the kills being rendered right now, and the
    limit on replays reading at once."""

    def __init__(self, concurrency: int, cache_bytes: int = CACHE_BYTES, cache_seconds: float = CACHE_SECONDS) -> None:
        self.cache = FrameCache(cache_bytes, cache_seconds)
        self.reading = asyncio.Semaphore(concurrency)
        # seq -> the frame another replay is rendering (None if it turned out not to be stored)
        self._rendering: dict[int, asyncio.Future[Cached | None]] = {}
        self.running = 0
        self.renders = 0  # kills rendered for replays (what the sharing saves shows here)

    async def page(self, source: KillLog, cursor: int, end: int) -> list[tuple[int, Cached]]:
        """The frames of the next stored kills after `cursor` (up to `end`): from the cache, from
        another replay rendering them now, or rendered here; an empty list at the end."""
        seqs = await source.seqs_after(cursor, end, PAGE)
        found: dict[int, Cached] = {}
        waits: dict[int, asyncio.Future[Cached | None]] = {}
        missing = []
        for seq in seqs:
            if (entry := self.cache.get(seq)) is not None:
                found[seq] = entry
            elif (pending := self._rendering.get(seq)) is not None:
                waits[seq] = pending
            else:
                missing.append(seq)
        await self._render(source, missing, found)
        if waits:
            await asyncio.wait(waits.values())  # not cancelled with us: others wait on them too
            again = []
            for seq, pending in waits.items():
                entry = None if pending.cancelled() else pending.result()
                if entry is not None:
                    found[seq] = entry
                else:  # its renderer went away, or the kill was pruned: look for ourselves
                    again.append(seq)
            await self._render(source, again, found)
        # A kill pruned meanwhile is simply not there; one seq past the end tells the caller
        # where to go on when a whole page was pruned.
        page = [(seq, found[seq]) for seq in seqs if seq in found]
        if seqs and not page:
            page = [(seqs[-1], Cached(b"", None, 0.0))]
        return page

    async def _render(self, source: KillLog, seqs: list[int], found: dict[int, Cached]) -> None:
        if not seqs:
            return
        loop = asyncio.get_running_loop()
        promised = {seq: loop.create_future() for seq in seqs}
        self._rendering.update(promised)
        try:
            async with self.reading:
                rows = await source.by_seqs(seqs)
            for seq, body, facts in rows:
                entry = found[seq] = self.cache.put(seq, kill_frame(seq, body))
                entry.facts = facts
                promised[seq].set_result(entry)
                self.renders += 1
        finally:
            for seq, pending in promised.items():
                if self._rendering.get(seq) is pending:
                    del self._rendering[seq]
                if not pending.done():
                    pending.set_result(None)

    async def run(
        self, hub: Hub, source: KillLog, sub: Subscriber, condition: Condition, channel: str, since: int, cap: int
    ) -> int:
        self.running += 1
        try:
            return await replay(hub, source, sub, condition, channel, since, cap, self)
        finally:
            self.running -= 1
            if not self.running:
                self.cache.clear()  # it only serves replays that overlap; nobody needs it now


async def replay(
    hub: Hub,
    source: KillLog,
    sub: Subscriber,
    condition: Condition,
    channel: str,
    since: int,
    cap: int,
    shared: Replays,
) -> int:
    """Send `{"action":"replay",...}`, then the kills after `since` matching `condition` (at most
    the last `cap` stored kills are read), then hand over to live delivery. Returns kills sent."""
    hub.hold(sub)
    sent = 0
    try:
        try:
            floor, end = await source.bounds(since)
        except LogUnavailable as exc:
            log.warning("replay for %r not possible now: %s", channel, exc)
            hub.close(sub, WSCloseCode.TRY_AGAIN_LATER, b"replay source unavailable: reconnect with since")
            return sent
        start = max(since, end - cap, min(floor, end))
        recovered = start == since
        hub.send_json(sub, {"action": "replay", "channel": channel, "recovered": recovered, "from": start, "to": end})
        if not recovered:
            # debug: every new client that asks for since=0 on a big database gets here, twice a
            # second per socket at most (the rate limit): not something to fill the log with.
            log.debug("replay for %r: kills after %d reach back only to %d (cap %d)", channel, since, start, cap)
        cursor = start
        every = condition.keys == {ALL}
        while cursor < end and not sub.dropped:
            try:
                page = await shared.page(source, cursor, end)
            except LogUnavailable as exc:
                log.warning("replay for %r broke off at %d: %s", channel, cursor, exc)
                hub.close(sub, WSCloseCode.TRY_AGAIN_LATER, b"replay source unavailable: reconnect with since")
                return sent
            if not page:
                break
            for seq, entry in page:
                if not entry.frame or seq in sub.delivered:
                    continue  # pruned, or it came live on another of the socket's channels
                if not every and entry.facts is None:
                    entry.facts = hub.recent_facts.get(seq) or kill_facts(ujson.loads(_body(entry.frame)))
                if every or condition.matches(entry.facts):  # type: ignore[arg-type]
                    if not await _put(hub, sub, await _frame_for(hub, sub, seq, entry, shared.cache)):
                        return sent
                    sub.delivered.add(seq)
                    sent += 1
            cursor = page[-1][0]
        # Hand over: live kills held meanwhile, minus those this replay covered, left to the
        # client to page through the REST API, or that the client said it had (seq <= since).
        # More may arrive while we wait on the outbox.
        while sub.held:
            seq, frame, facts = sub.held.popleft()
            sub.held_bytes -= len(frame)
            if seq <= end and condition.matches(facts):
                continue
            if not await _put(hub, sub, frame):
                return sent
            sub.delivered.add(seq)
        return sent
    finally:
        hub.release(sub)  # no await since the loop found it empty: live delivery resumes


async def _frame_for(hub: Hub, sub: Subscriber, seq: int, entry: Cached, cache: FrameCache) -> bytes:
    """The cached frame as this socket takes its kills: names in its languages, deflated for its
    window (the cache holds the plain frame with every language)."""
    if sub.lang is None and not sub.deflate:
        return entry.frame
    if entry.variants is None:
        entry.variants = {}
    key = (sub.lang, sub.deflate)
    frame = entry.variants.get(key)
    if frame is None:
        frame = entry.variants[key] = await hub.replay_frame(sub, seq, body_of(seq, entry.frame))
        cache.grew(len(frame))
    return frame


def _body(frame: bytes) -> bytes:
    """The kill object inside a kill frame (hub.kill_frame)."""
    return frame[frame.index(b'"data":') + 7 : -1]


async def _put(hub: Hub, sub: Subscriber, frame: bytes) -> bool:
    """Queue a frame, waiting for room (a replay may be longer than the socket's budget)."""
    if sub.dropped:
        return False
    try:
        async with asyncio.timeout(STALL_TIMEOUT):
            await hub.put(sub, frame)
    except TimeoutError:
        hub.drop(sub, WSCloseCode.TRY_AGAIN_LATER, b"replay stalled: client reads too slowly")
        return False
    return not sub.dropped
