"""Catch-up for a client that comes back: the stored kills after its last seq, filtered by its
channel, then the live ones, with no gap and no duplicate between the two.

The channel is subscribed and the socket's live kills are held back *before* the store is read.
The replay sends the stored kills up to the last seq it saw when it started; then the held live
frames go out, except those the replay covered; then live delivery resumes. A kill committed
while the replay runs is either read by it, or held, or both (and then sent once). A kill the
socket already got live on another channel (hub.Delivered) is not sent again.

The kills come from a KillLog: the Store on the writer, the Redis Stream on an edge
(killboard/bus/stream.py), which may no longer reach back to `since` (then `recovered: false`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import ujson
from aiohttp import WSCloseCode

from .hub import Hub, Subscriber
from .store import Store
from .topics import ALL, Condition, KillFacts, kill_facts

log = logging.getLogger(__name__)

PAGE = 200
# A client that takes no replayed frame for this long is not reading: drop it, as a live laggard.
STALL_TIMEOUT = 10.0


class KillLog(Protocol):
    """Where a replay reads stored kills: the Store on a writer, the Redis Stream on an edge."""

    async def bounds(self, since: int) -> tuple[int, int]:
        """(floor, end): the log holds every kill after `floor`; the replay reads up to `end`,
        and every kill after `end` reaches the socket live."""
        ...

    async def after(self, seq: int, limit: int) -> Sequence[tuple[int, bytes, KillFacts | None]]:
        """Up to `limit` kills after `seq`, oldest first: (seq, JSON body, match keys if known)."""
        ...


class LogUnavailable(Exception):
    """The log cannot be read right now; the client is asked to come back with its `since`."""


@dataclass(frozen=True, slots=True)
class StoreLog:
    """The Store as a KillLog: everything stored is there (retention is the REST API's to report)."""

    store: Store

    async def bounds(self, since: int) -> tuple[int, int]:
        return 0, await self.store.last_seq()

    async def after(self, seq: int, limit: int) -> Sequence[tuple[int, bytes, KillFacts | None]]:
        return [(row.seq, row.body, None) for row in await self.store.after(seq, limit)]


async def replay(
    hub: Hub, source: KillLog, sub: Subscriber, condition: Condition, channel: str, since: int, cap: int
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
            log.info("replay for %r: kills after %d reach back only to %d (cap %d)", channel, since, start, cap)
        cursor = start
        every = condition.keys == {ALL}
        while cursor < end and not sub.dropped:
            try:
                rows = await source.after(cursor, min(PAGE, end - cursor))
            except LogUnavailable as exc:
                log.warning("replay for %r broke off at %d: %s", channel, cursor, exc)
                hub.close(sub, WSCloseCode.TRY_AGAIN_LATER, b"replay source unavailable: reconnect with since")
                return sent
            if not rows:
                break
            for seq, body, known in rows:
                if seq > end:
                    break
                if seq in sub.delivered:
                    continue  # it came live on another of the socket's channels: once is enough
                facts = None if every else known or hub.recent_facts.get(seq) or kill_facts(ujson.loads(body))
                if facts is None or condition.matches(facts):
                    if not await _put(hub, sub, await hub.replay_frame(sub, seq, body)):
                        return sent
                    sub.delivered.add(seq)
                    sent += 1
            cursor = rows[-1][0]
        # Hand over: live kills held meanwhile, minus those this replay covered, left to the
        # client to page through the REST API, or that the client said it had (seq <= since).
        # More may arrive while we wait on the outbox.
        while sub.held:
            seq, frame, facts = sub.held.popleft()
            if seq <= end and condition.matches(facts):
                continue
            if not await _put(hub, sub, frame):
                return sent
            sub.delivered.add(seq)
        return sent
    finally:
        sub.held = None  # no await since the loop found the buffer empty: live delivery resumes


async def _put(hub: Hub, sub: Subscriber, frame: bytes) -> bool:
    """Queue a frame, waiting for room (a replay may be longer than the outbox)."""
    if sub.dropped:
        return False
    try:
        async with asyncio.timeout(STALL_TIMEOUT):
            await sub.outbox.put(frame)
    except TimeoutError:
        hub.drop(sub, WSCloseCode.TRY_AGAIN_LATER, b"replay stalled: client reads too slowly")
        return False
    return True
