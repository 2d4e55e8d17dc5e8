"""Kills the hub could not give out in the step that published them, and the task that delivers them."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Collection
from typing import Protocol

from ..kill.langs import Langs
from ..kill.topics import Index, KillFacts
from .slices import (
    BURST,
    DELIVER_SLICE,
    LATE_MAX_BYTES,
    MATCH_SLICE,
    PLAIN,
    UNMATCHED_BYTES,
    Queued,
    make_all,
)
from .subscriber import Subscriber
from .wire import OFFLOAD_BYTES, KillVariants


class Fanout(Protocol):
    """What the delivery task uses of the hub (killboard/live/hub.py, which holds the task):
    its index and socket groups, its per-socket send, its flush's due sockets, its counters."""

    changes: int
    deliveries: int
    variants_made: int
    send_slice: int
    flush_slice: int
    _due: list[Subscriber]
    _index: Index[Subscriber]

    def _group(self, targets: set[Subscriber]) -> dict[tuple[Langs, int], Collection[Subscriber]]: ...

    def send(self, sub: Subscriber, frame: bytes, size: int | None = None) -> bool: ...

    def _send_all(
        self,
        subs: Collection[Subscriber],
        seq: int,
        frame: bytes,
        facts: KillFacts,
        wanted: set[Subscriber] | None = None,
    ) -> int: ...


class DeliveryTask:
    """The hub's queue of kills waiting for delivery in slices, and the task that serves it.

    Kills wait here (their variants made in a thread, or more sockets than one step may write),
    in publish order: a socket gets its kills in seq order, so no kill overtakes one queued
    here. `plain`: how many of them have plain sockets. `room` counts the sockets publish gives
    a frame in the current step of the loop."""

    def __init__(self, hub: Fanout) -> None:
        self.hub = hub
        self.entries: deque[Queued] = deque()
        self.nbytes = 0
        self.plain = 0
        self.task: asyncio.Task[None] | None = None
        # Sockets given a frame by publish since the current step began (`_counting`: a
        # callback that ends the count is scheduled).
        self._sent_now = 0
        self._counting = False
        # Answers held until the kills queued before them are delivered (hold_answer): (entries
        # queued by then, socket, frame); `queued` and `done` count the entries ever queued and
        # ever delivered whole (entries leave in the order they came).
        self.answers: deque[tuple[int, Subscriber, bytes]] = deque()
        self.queued = 0
        self.done = 0

    def stop(self) -> None:
        """Cancel the task (at shutdown): the kills it had not delivered are in the store, and a
        `since` replays them."""
        if self.task is not None:
            self.task.cancel()

    def room(self, sockets: int) -> bool:
        """Whether publish may give `sockets` more sockets their frame in this step of the loop
        (at most `send_slice` a step); else the kill goes to the delivery task, in slices."""
        if not self._counting:
            self._counting, self._sent_now = True, 0
            asyncio.get_running_loop().call_soon(self._step_over)
        if self._sent_now + sockets > self.hub.send_slice:
            return False
        self._sent_now += sockets
        return True

    def _step_over(self) -> None:
        self._counting = False

    def publish_variants(
        self, kill: KillVariants, groups: dict[tuple[Langs, int], Collection[Subscriber]], facts: KillFacts
    ) -> int:
        """Send a small kill's other variants at once, made here, when this step has room for
        its sockets; else (or for a large one, or any kill behind one queued) the kill waits its
        turn in `entries` for the delivery task: a large kill's variants are made in a thread (a
        language variant of a fleet fight is ~12 ms of decode, filter and encode, a deflate as
        much, and nine of each would hold the loop for a quarter of a second), and its sockets
        are given their frame in slices. Returns the sockets it is meant for."""
        size = len(kill.body())
        count = sum(map(len, groups.values()))
        if not self.entries and size < OFFLOAD_BYTES:
            if self.room(count):
                sent = self._deliver(kill, groups, facts)
                self.hub.variants_made += kill.made
                return sent
            make_all([(kill, key) for key in groups])  # small: made now, the slices follow
        groups_list = [(key, list(subs)) for key, subs in groups.items()]
        self.queue(Queued(kill, groups_list, facts, size + 8 * count, PLAIN in groups, self.hub.changes))
        return count

    def queue(self, entry: Queued) -> None:
        """A kill to the delivery task's queue (started if need be)."""
        if entry.groups is None:
            entry.nbytes = UNMATCHED_BYTES
        self.entries.append(entry)
        self.queued += 1
        self.nbytes += entry.nbytes
        self.plain += entry.plain
        if self.nbytes > LATE_MAX_BYTES and len(self.entries) > 1:
            # The task is not keeping up (the thread's deflate, or the sockets' writes): the
            # oldest kills are delivered now (slowing the producer) instead of holding ever more.
            while self.nbytes > LATE_MAX_BYTES // 2 and len(self.entries) > 1:
                self.pump(self.hub.send_slice, make=True)
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self.run(), name="hub-variants")

    def look_up(self, entry: Queued) -> int:
        """A queued kill's sockets, looked up now (it was queued before they were); returns them.
        Its stamp says to check each socket's Delivered: one that subscribed with `since` after
        the kill was stored may have had it from its replay already."""
        hub = self.hub
        targets = hub._index.match(entry.facts)
        groups = hub._group(targets) if targets else {}
        entry.groups = [(key, list(subs)) for key, subs in groups.items()]
        count = len(targets)
        nbytes = (len(entry.kill.body()) if count else 0) + 8 * count
        self.nbytes += nbytes - entry.nbytes
        entry.nbytes = nbytes
        if PLAIN not in groups:
            entry.plain = False
            self.plain -= 1
        hub.deliveries += count
        return count

    async def run(self) -> None:
        """Deliver the queued kills in publish order: make their variants in one thread hop
        (zlib releases the GIL; decode and encode hold it, but the loop still gets its turn
        every switch interval), then give their sockets their frames `send_slice` sockets and
        DELIVER_SLICE bytes a step, letting the loop run between steps. A kill stays first in
        `entries` until every socket has it, so no kill published meanwhile overtakes it."""
        loop = asyncio.get_running_loop()
        hub = self.hub
        while self.entries:
            looked = 0
            for entry in list(self.entries):
                if entry.groups is None:
                    looked += self.look_up(entry) + 1
                    if looked >= MATCH_SLICE:
                        await asyncio.sleep(0)  # a step's worth of lookups
                        looked = 0
            batch = list(self.entries)
            if len(batch) > BURST:
                # A backlog being caught up (an ingest burst) rather than the live feed: the CPU
                # is the wall then, and level 1 takes half the time of 6 for ~16% more bytes.
                for entry in batch:
                    if not entry.group and not entry.pos:
                        entry.kill.level = 1
            todo = [(e.kill, key) for e in batch for key, _ in e.groups or () if not e.kill.has(*key)]
            if todo:
                await loop.run_in_executor(None, make_all, todo)
            while self.entries:
                # Not more than a few flush steps ahead: frames piling up in `pending` faster
                # than the flush writes them would end in writes of a socket's whole budget.
                if len(hub._due) <= 4 * hub.flush_slice and not self.pump(hub.send_slice):
                    break  # a kill queued since needs its variants: the thread first
                await asyncio.sleep(0)  # the loop's other work, and the flush, between steps

    def pump(self, sockets: int, make: bool = False) -> bool:
        """One step of the delivery task: the queued kills' frames to at most `sockets` sockets
        and DELIVER_SLICE bytes, in order. Stops early at a kill whose variants are not made
        (unless `make`: then made here). Returns whether it did anything (False: the task must
        make variants first). Whether a socket still wants a kill is looked up once a step (the
        index, not each socket's channels): it may have gone or unsubscribed since the kill
        was published, or had the kill from a replay (only if some socket did any of that
        since: `changes`)."""
        hub = self.hub
        late = self.entries
        room, space, did = sockets, DELIVER_SLICE, False
        while late and room > 0 and space > 0:
            entry = late[0]
            kill = entry.kill
            if entry.groups is None:
                room -= self.look_up(entry) // 32
            groups = entry.groups
            assert groups is not None
            if not make and not all(kill.has(*key) for key, _ in groups[entry.group :]):
                return did
            did = True
            wanted = None if entry.stamp == hub.changes else hub._index.match(entry.facts)
            while entry.group < len(groups) and room > 0 and space > 0:
                (langs, bits), subs = groups[entry.group]
                frame = kill.deflated(langs, bits) if bits else kill.frame(langs)
                take = min(room, len(subs) - entry.pos, max(1, space // max(1, len(frame))))
                end = entry.pos + take
                part = subs[entry.pos : end] if take < len(subs) else subs
                hub._send_all(part, kill.seq, frame, entry.facts, wanted)
                room -= take
                space -= take * len(frame)
                if end < len(subs):
                    entry.pos = end
                else:
                    entry.group, entry.pos = entry.group + 1, 0
            if entry.group < len(groups):
                break
            late.popleft()
            self.nbytes -= entry.nbytes
            self.plain -= entry.plain
            hub.variants_made += kill.made
            self.done += 1
            if self.answers:
                self._answer()
        return did

    def hold_answer(self, sub: Subscriber, frame: bytes) -> None:
        """Send `frame` (a pong) to `sub` once every kill queued here by now is delivered, so it
        does not overtake one that was published before it: a client may use ping as a barrier.
        Its bytes count in the socket's budget until then (Subscriber.answers)."""
        self.answers.append((self.queued, sub, frame))
        sub.answers += len(frame)

    def _answer(self) -> None:
        answers, send = self.answers, self.hub.send
        while answers and answers[0][0] <= self.done:
            _, sub, frame = answers.popleft()
            sub.answers -= len(frame)
            send(sub, frame)  # behind the kills' frames, which the socket has now (pending or outbox)

    def _deliver(
        self,
        kill: KillVariants,
        groups: dict[tuple[Langs, int], Collection[Subscriber]],
        facts: KillFacts,
    ) -> int:
        """A small kill's frames to its sockets, at once (made here if need be)."""
        sent = 0
        send_all = self.hub._send_all
        for (langs, bits), subs in groups.items():
            frame = kill.deflated(langs, bits) if bits else kill.frame(langs)
            sent += send_all(subs, kill.seq, frame, facts)
        return sent
