"""The queue between ingest and storage, and the worker that drains it.

Ingest records each accepted killmail durably in the inbox, then queues it. The worker takes
what is waiting in batches, enriches each kill, stores the batch in one transaction (removing
its inbox rows), and only then hands the new kills to the hub: a kill is never broadcast before
it is saved, and never twice.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..kill.codec import kill_prices, player_ids, source_document
from ..kill.enrich import enrich
from ..kill.prices import PriceBook
from ..kill.staticdata import StaticData
from ..kill.topics import KillFacts, kill_facts
from ..kill.validate import Submission, check_esi, parse_time
from ..metrics import Metrics
from ..storage.participants import participation
from ..storage.rows import InboxRow, NewKill
from ..storage.store import Store
from .esi import KillmailGone
from .offload import BIG_KILL, Call, Enriched, Offload, Packed, kills_of, new_kill
from .queue import KillQueue, Pending, from_inbox, inbox_payload, inbox_rows

log = logging.getLogger(__name__)

T = TypeVar("T")

NameResolver = Callable[[set[int]], Awaitable[dict[int, str]]]
# Fetches the ESI body of a kill given only by id and hash; raises KillmailGone when it does not
# exist (dropped), anything else when it may work later (kept in the inbox, retried).
KillmailFetcher = Callable[[int, str], Awaitable[dict[str, Any]]]
# Told of every stored kill after its batch is committed: (seq, JSON body, match keys, pushed
# live). The Redis bus writer (killboard/bus/writer.py) appends them to the stream.


@dataclass(frozen=True, slots=True)
class Stored:
    """One kill the worker has just committed, handed to every `on_stored` hook in seq order."""

    seq: int
    kill: NewKill  # its JSON (.body) and enriched object (.enriched) are made only when asked for
    facts: KillFacts | None  # what channels match on; None where no hook needs them (an import)
    live: bool  # for the sockets: submitted live, and not older than KILLBOARD_LIVE_MAX_AGE


# The one hook for stored kills: the hub (live sockets), the Redis bus writer and webhooks.
OnStored = Callable[[Stored], None]
RETRY_MAX = 300.0  # longest wait before an incomplete kill is tried again
# Kills of more than offload.BIG_KILL attackers and items are enriched and encoded in the worker
# process (offload.py), or in a thread when it is not there: a kill of 3,000 attackers is ~70 ms
# of CPU, which on the loop would stall every socket. Typical kills (~10 attackers, ~40 items)
# stay on the loop, where they cost less than the hop.
# An inbox payload this big (a fleet fight) is decoded off the loop at recovery.
BIG_PAYLOAD = 256 * 1024
# A batch with at least this many ordinary kills (a catch-up: the queue had them waiting) is
# prepared in the worker process; fewer are prepared on the loop, where a lone kill is fastest.
WORKER_BATCH = 32
WORKER_CHUNK = 50  # kills a call to the worker: what the loop can take back when the worker is behind
STEAL_POLL = 0.01  # seconds between looks at whether the write before the batch is done

# A kill made for the batch before it is put in: by the worker, here, or what went wrong.
Made = Enriched | tuple[NewKill, KillFacts | None] | Exception


@dataclass(frozen=True, slots=True)
class Admission:
    accepted: list[int]
    duplicates: list[int]


class QueueFull(Exception):
    """The worker is too far behind; the client should retry later."""


class TooBig(Exception):
    """Submissions whose payloads together exceed the queue's whole bound in bytes: they could
    never be queued, so waiting would not help (HTTP 413)."""


class StorageUnavailable(Exception):
    """The database refused the write (disk full, I/O error): nothing was acknowledged."""


# A batch the database refused is retried after this delay, doubling up to the maximum: a full
# disk or a passing I/O error clears without a restart, and every later batch needs it to.
STORE_RETRY_FIRST = 0.1
STORE_RETRY_MAX = 5.0


@dataclass(slots=True)
class Prepared:
    """A batch enriched and ready to write."""

    batch: list[Pending]  # the kills that can be stored now (incomplete ones wait for ESI)
    dropped: list[int]  # ids to remove from the inbox without storing
    kills: list[NewKill]
    live: dict[int, bool]
    unresolved: set[int]  # player ids still without a name
    rejected: list[int]  # ids whose enrichment failed (logged, counted)
    facts: dict[int, KillFacts]  # what channels match on, per live kill


@dataclass(slots=True)
class Started:
    """A batch completed, named and, in a catch-up, handed to the worker process: the first half
    of prepare (`Pipeline.start`); `Pipeline.finish` makes the rest."""

    batch: list[Pending]
    dropped: list[int]
    names: Mapping[int, str]
    unresolved: set[int]
    todo: deque[tuple[list[int], Call[bytes]]]  # chunks handed to the worker, in order
    finishing: bool = False  # finish has begun: its chunks' answers are being taken


@dataclass(slots=True)
class Pipeline:
    """Admission into the queue, and the worker loop behind it."""

    store: Store
    static: StaticData
    prices: PriceBook
    queue: KillQueue
    batch_size: int = 200
    queue_full_wait: float = 2.0
    live_max_age: int = 86_400
    # Filled by the ESI client when it runs: resolves player names before a kill is broadcast.
    resolve_names: NameResolver | None = None
    # Filled by the ESI client when it runs: completes kills that came as id + hash only.
    fetch_killmail: KillmailFetcher | None = None
    processed: int = 0
    failed: int = 0
    # The database error that is holding the worker back, None while writes succeed (/health).
    store_error: str | None = None
    _reserved: int = 0
    _reserved_bytes: int = 0  # payload bytes of _reserved
    _idle: asyncio.Event = field(default_factory=asyncio.Event)
    # Batches taken and not yet written: run()'s own, a lone kill's, and those of a writer of its
    # own (the importer's Writer counts its batches here too, so the loop leaves the worker's chunks to it).
    in_flight: int = 0
    _attempts: dict[int, int] = field(default_factory=dict)
    metrics: Metrics | None = None
    # Called for every committed kill, in seq order; a list the app's parts append to (server.py).
    on_stored: list[OnStored] = field(default_factory=list)
    # Match keys for every stored kill, not only live ones (the Redis bus stores them with each entry).
    facts_for_all: bool = False
    # The worker process for fleet fights (server.py); None: they are done in threads here.
    offload: Offload | None = None
    # A kill submitted alone while the worker is idle is stored by its submitter (server.py).
    store_alone: bool = False
    # Held around every commit and its hooks: by the worker's writer and by a kill stored alone,
    # so seqs and the on_stored hooks keep the order in which kills were taken.
    _turn: asyncio.Lock = field(default_factory=asyncio.Lock)
    offloaded: int = 0  # ordinary kills the worker process made (tests)
    # Batches run() took ahead (counted in in_flight too): handed to the worker while the one
    # before them is finished, so the worker has the next chunks when it is done with this one.
    _ahead: int = 0
    # Whether the loop takes back a catch-up's chunks the worker has not started (_collect); off,
    # the worker makes every chunk it was handed (tests that compare its kills with the loop's).
    take_back: bool = True
    looked_ahead: int = 0  # batches taken ahead so far (tests)

    async def submit(
        self, subs: Sequence[Submission], source: str, live: bool = True, state: dict[str, str] | None = None
    ) -> Admission:
        """Record submissions durably and queue them; returns once they survive a crash.

        `state` is committed in the same transaction as the inbox rows (a feed's cursor).
        Raises QueueFull when the queue has had no room (kills or bytes) for `queue_full_wait`
        seconds, TooBig when their payloads exceed the queue's whole bound in bytes (not for a
        feed's kill, with `state`: that one waits until nothing else is held), and
        StorageUnavailable when the database cannot take the write (nothing is acknowledged then).
        """
        if state is None and self._alone(subs) and (alone := await self._store_alone(subs[0], source, live)):
            return alone
        # The payloads are made before the reservation: their length is what the bound counts.
        if sum(kill_size(s) for s in subs) > BIG_KILL:
            rows = await asyncio.to_thread(inbox_rows, subs, source, live)  # a fleet fight: ~10 ms a MB
        else:
            rows = inbox_rows(subs, source, live)
        sizes = {row.killmail_id: len(row.payload) for row in rows}
        nbytes = sum(sizes.values())
        await self._reserve(len(subs), nbytes, self.queue_full_wait, oversized=state is not None)
        try:
            try:
                accepted, duplicates = await self.store.add_to_inbox(rows, state)
            except sqlite3.Error as exc:
                log.error("recording %d submissions from %s failed: %s", len(rows), source, exc)
                raise StorageUnavailable(str(exc)) from exc
            if self.metrics is not None:
                self.metrics.kills_ingested.labels(source).inc(len(accepted))
                self.metrics.kills_duplicate.labels(source).inc(len(duplicates))
            by_id = {s.killmail_id: s for s in subs}
            for kill_id in accepted:
                self._idle.clear()
                self.queue.put_nowait(Pending(by_id[kill_id], live, sizes[kill_id]))
        finally:
            self._reserved -= len(subs)
            self._reserved_bytes -= nbytes
        return Admission(accepted, duplicates)

    def _alone(self, subs: Sequence[Submission]) -> bool:
        """One complete, typical kill while nothing is queued or being stored: it can be stored
        now, in one transaction, instead of written to the inbox, read back and deleted."""
        if not self.store_alone or len(subs) != 1 or self.in_flight or self._reserved or not self.queue.empty():
            return False
        sub = subs[0]
        return (
            self.store_error is None
            and sub.esi is not None
            and not isinstance(sub, Packed)
            and kill_size(sub) <= BIG_KILL
        )

    async def _store_alone(self, sub: Submission, source: str, live: bool) -> Admission | None:
        """Enrich and store one kill before answering: durable once its own transaction commits,
        as an inbox row would be. What is spared is the inbox's transaction (~5 thread hops, the
        payload written, then deleted by the worker's) and the queue's hand-off. None: it takes
        the inbox after all (a name ESI would be asked for: the answer must not wait for ESI).
        A database error acknowledges nothing (StorageUnavailable).

        Two hops: whether it is stored already with its names (Store.alone: a duplicate is
        answered unenriched), then its write. The enrichment stays on the loop between them: in
        the database thread (one hop in all) the same kill cost the process more CPU, not less
        (bench.solokill: 5.6 against 5.1 CPU-ms a kill, 2026-12-07)."""
        kill_id = sub.killmail_id
        ids = players(sub)
        made: tuple[NewKill, KillFacts | None] | None = None  # the kill enriched (None: dropped)
        duplicate = False
        stored: list[tuple[int, NewKill]] = []
        self.in_flight += 1
        self._idle.clear()
        try:
            async with self._turn:  # free (the worker is idle), and taken before any later kill
                try:
                    duplicate, names = await self.store.alone(kill_id, ids)
                    if not duplicate:
                        if self.resolve_names is not None and len(names) < len(ids):
                            return None  # enrichment would ask ESI for a name: the answer must not wait
                        made = self._enrich_alone(sub, names, live or self.facts_for_all)
                        started = time.perf_counter()
                        if made is not None:
                            stored = await self.store.save_alone(made[0])
                except sqlite3.Error as exc:
                    log.error("storing a kill from %s failed: %s", source, exc)
                    raise StorageUnavailable(str(exc)) from exc
                except Exception:
                    # A bug, not the database: the worker's retries take it from the inbox (if it
                    # was stored after all, the inbox answers that it is a duplicate).
                    log.exception("kill %d could not be stored alone; it goes through the inbox", kill_id)
                    return None
                if not duplicate:
                    facts = {kill_id: made[1]} if made is not None else {}
                    self._announce(stored, int(made is not None), int(made is None), facts, {kill_id: live}, started)
        finally:
            self.in_flight -= 1
            if self.queue.empty() and not self.in_flight:
                self._idle.set()
        # Stored now, or dropped by enrichment (as the worker would have after an inbox write).
        accepted = [kill_id] if stored or (not duplicate and made is None) else []
        if self.metrics is not None:
            self.metrics.kills_ingested.labels(source).inc(len(accepted))
            self.metrics.kills_duplicate.labels(source).inc(1 - len(accepted))
        return Admission(accepted, [] if accepted else [kill_id])

    def _enrich_alone(
        self, sub: Submission, names: Mapping[int, str], facts: bool
    ) -> tuple[NewKill, KillFacts | None] | None:
        """_enrich, or None (logged) where prepare would reject the kill."""
        try:
            return self._enrich(sub, names, facts)
        except Exception:
            log.exception("kill %d could not be enriched; dropped", sub.killmail_id)
            return None

    async def _reserve(self, count: int, nbytes: int, wait: float | None, oversized: bool = False) -> None:
        """Room for `count` kills of `nbytes` payload bytes, waiting up to `wait` seconds (None:
        as long as it takes). More than the whole bound in bytes is TooBig, unless `oversized`:
        then it goes in once nothing else is held (recovery's kills, acknowledged already, and
        a feed's, which holds its cursor until its kill is in: never refused for their size)."""
        # The reservation keeps concurrent submitters from overfilling the queue while one of
        # them awaits its inbox write; polling is fine here, it only runs when the queue is full.
        queue = self.queue
        if nbytes > queue.max_bytes and not oversized:
            kills = "1 kill" if count == 1 else f"{count} kills"
            raise TooBig(f"{kills} of {nbytes:,} bytes; the queue holds at most {queue.max_bytes:,} bytes")
        deadline = time.monotonic() + wait if wait is not None else None
        while not self._room(count, nbytes):
            if count > queue.maxsize or (deadline is not None and time.monotonic() >= deadline):
                raise QueueFull(self._fullness())
            await asyncio.sleep(0.05)
        self._reserved += count
        self._reserved_bytes += nbytes

    def _fullness(self) -> str:
        queue = self.queue
        held = queue.nbytes + self._reserved_bytes
        return f"queue full ({queue.qsize()} waiting, {held:,} of {queue.max_bytes:,} bytes held)"

    def _room(self, count: int, nbytes: int) -> bool:
        queue = self.queue
        if queue.maxsize - queue.qsize() - self._reserved < count:
            return False
        held = queue.nbytes + self._reserved_bytes
        return held + nbytes <= queue.max_bytes or held == 0

    async def recover(self) -> int:
        """Queue what was acknowledged but not processed before the last stop or crash."""
        total, after = 0, 0
        while rows := await self.store.inbox(after, 1000):
            for row in rows:
                self._idle.clear()
                # Waits for room, in kills and bytes: the worker is already running.
                await self._reserve(1, len(row.payload), None, oversized=True)
                try:
                    pending = await self._from_inbox(row)
                    self.queue.put_nowait(pending)
                finally:
                    self._reserved -= 1
                    self._reserved_bytes -= len(row.payload)
            after = rows[-1].killmail_id
            total += len(rows)
        if total:
            log.info("recovered %d acknowledged kills from the inbox", total)
        return total

    async def _from_inbox(self, row: InboxRow) -> Pending:
        if len(row.payload) <= BIG_PAYLOAD:
            return from_inbox(row)
        packed = await self.offload.repack(row.payload) if self.offload is not None else None
        if packed is not None and packed.size > BIG_KILL:
            return Pending(packed, row.live, len(row.payload))
        return await asyncio.to_thread(from_inbox, row)

    async def run(self) -> None:
        """Worker: take what is waiting (up to a batch) and enrich it while the batch before it is
        being written, then hand it to the writer; repeat.

        Enrichment is CPU work on the event loop; the write (zlib and SQLite, in aiosqlite's
        thread) is mostly not. Overlapping the two keeps both cores busy during a catch-up: run
        one after the other, the loop sat idle for ~40% of an HTTP ingest waiting on the write.
        Batches are still committed one at a time and in order, so sequence numbers and the
        broadcast follow the queue's order.
        """
        writing: asyncio.Task[None] | None = None
        ahead: tuple[list[Pending], asyncio.Task[Started]] | None = None
        try:
            while True:
                if ahead is None:
                    if self.queue.empty() and not self.in_flight:
                        self._idle.set()
                    batch = [await self.queue.get()]
                    self._take(batch)
                    # Taken but not yet written: idle only once this is back to 0 with the queue empty.
                    self.in_flight += 1
                    starting: asyncio.Task[Started] | None = None
                else:
                    (batch, starting), ahead = ahead, None
                    self._ahead -= 1
                try:
                    started = await self._started(batch, starting)
                    if started.todo and not self.queue.empty():
                        # A catch-up: the next batch is named and handed to the worker now, behind
                        # this one's chunks, instead of once this one is finished and its write
                        # begun (the worker sat idle for that, ~45 ms of a ~190 ms batch).
                        following: list[Pending] = []
                        self._take(following)
                        self.in_flight += 1
                        self._ahead += 1
                        self.looked_ahead += 1
                        ahead = following, asyncio.create_task(self.start(following), name="killboard-ahead")
                    prepared = await self._until_done(self._finish_started, started)
                    if writing is not None:
                        await writing  # the batch before this one is stored and broadcast
                except BaseException:
                    self.in_flight -= 1
                    raise
                writing = asyncio.create_task(self._write(batch, prepared), name="killboard-writer")
        finally:
            if ahead is not None:  # a shutdown: its kills stay in the inbox for the next start
                self.in_flight -= 1
                self._ahead -= 1
                ahead[1].cancel()
                with suppress(BaseException):
                    await ahead[1]
            if writing is not None and not writing.done():
                writing.cancel()
                with suppress(asyncio.CancelledError):
                    await writing

    def _take(self, batch: list[Pending]) -> None:
        """Fill `batch` up to a batch's size with what is waiting in the queue."""
        while len(batch) < self.batch_size and not self.queue.empty():
            batch.append(self.queue.get_nowait())

    async def _started(self, batch: list[Pending], starting: asyncio.Task[Started] | None) -> Started:
        """The batch's first half: the one begun ahead, or (none, or it failed) begun now and
        retried as every step is."""
        if starting is not None:
            try:
                return await starting
            except Exception:
                log.exception("a batch taken ahead failed to start; started again")
        return await self._until_done(self.start, batch)

    async def _finish_started(self, started: Started) -> Prepared:
        """finish, once; a retry after it failed part-way (its chunks' answers are gone) makes
        the batch again from the start, keeping the ids the first start dropped."""
        if not started.finishing:
            started.finishing = True
            return await self.finish(started)
        prepared = await self.prepare(started.batch)
        prepared.dropped[:0] = started.dropped
        return prepared

    async def _write(self, batch: list[Pending], prepared: Prepared) -> None:
        try:
            async with self._turn:
                await self._until_done(self.commit, prepared)
        finally:
            for _ in batch:
                self.queue.task_done()
            self.in_flight -= 1
            if self.queue.empty() and not self.in_flight:
                self._idle.set()

    async def _until_done(self, step: Callable[[Any], Awaitable[T]], arg: Any) -> T:
        """Run one step of the worker, retrying with backoff while it fails.

        The kills are acknowledged and sit in the inbox, so they must be stored eventually: a
        batch that failed (disk full, I/O error) is kept and retried until it goes through,
        rather than left for the next restart. Kills stored by an earlier attempt are skipped by
        save_kills, so a retry never stores or broadcasts a kill twice.
        """
        delay = STORE_RETRY_FIRST
        while True:
            try:
                result = await step(arg)
            except Exception as exc:
                if self.store_error is None:
                    log.exception("a batch failed (%s); retrying, its kills stay in the inbox", step.__name__)
                self.store_error = str(exc) or type(exc).__name__
                self.failed += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, STORE_RETRY_MAX)
                continue
            if self.store_error is not None:
                log.warning("the worker goes on after: %s", self.store_error)
                self.store_error = None
            return result

    async def wait_idle(self) -> None:
        """Until the queue is empty and the last batch is stored (tests and graceful stop)."""
        # Every put clears the event; the worker sets it only when it finds the queue empty.
        await self._idle.wait()

    async def process(self, batch: list[Pending]) -> list[tuple[int, NewKill]]:
        """Enrich and store a batch in one transaction, then broadcast the new live kills."""
        return await self.commit(await self.prepare(batch))

    async def prepare(self, batch: list[Pending], names: dict[int, str] | None = None) -> Prepared:
        """Complete, name and enrich a batch: everything before the write. `names`: every name
        the batch's complete kills need, already looked up (a kill stored alone)."""
        return await self.finish(await self.start(batch, names))

    async def start(self, batch: list[Pending], names: Mapping[int, str] | None = None) -> Started:
        """prepare's first half: the batch completed (ESI bodies) and named, and in a catch-up
        its ordinary kills handed to the worker process (`_hand`)."""
        batch, dropped = await self._complete(batch)
        names, unresolved = (names, set()) if names is not None else await self._names(batch)
        return Started(batch, dropped, names, unresolved, self._hand(batch, names))

    async def finish(self, started: Started) -> Prepared:
        """prepare's second half: every kill of a started batch made (by the worker, or here)."""
        batch, dropped, names, unresolved = started.batch, started.dropped, started.names, started.unresolved
        kills: list[NewKill] = []
        live: dict[int, bool] = {}
        # What channels match on, taken from the enriched kill before it becomes JSON.
        facts: dict[int, KillFacts] = {}
        rejected: list[int] = []
        made = await self._collect(batch, names, started.todo)
        for i, pending in enumerate(batch):
            sub = pending.submission
            try:
                # Match keys for the sockets (a live kill) and for the bus (every stored kill).
                wanted = pending.live or self.facts_for_all
                done = made.get(i)
                if isinstance(done, Exception):
                    raise done  # what it raised when made here while the worker was behind
                if isinstance(done, Enriched):
                    new, fact = self._finish(sub, done, names), done.facts
                elif done is not None:
                    new, fact = done  # made here while the worker was behind
                elif isinstance(sub, Packed) and sub.size > BIG_KILL:
                    new, fact = await self._enrich_packed(sub, names, wanted)
                elif isinstance(sub, Packed):  # a catch-up's kill the worker did not make: here
                    new, fact = self._enrich(sub.unpacked(), names, wanted)
                elif kill_size(sub) > BIG_KILL:
                    new, fact = await asyncio.to_thread(self._enrich, sub, names, wanted)
                else:
                    new, fact = self._enrich(sub, names, wanted)
                kills.append(new)
                live[sub.killmail_id] = pending.live
                if fact is not None:
                    facts[sub.killmail_id] = fact
            except Exception:
                log.exception("kill %d could not be enriched; dropped", sub.killmail_id)
                rejected.append(sub.killmail_id)
            if i % 16 == 15:
                await asyncio.sleep(0)  # enrichment is CPU work: let sockets breathe in big batches
        return Prepared(batch, dropped, kills, live, unresolved, rejected, facts)

    def _hand(self, batch: list[Pending], names: Mapping[int, str]) -> deque[tuple[list[int], Call[bytes]]]:
        """The ordinary kills of a big batch (a catch-up) handed to the worker process in chunks,
        each with its places in the batch; none for a small batch or before the worker is up.
        `_collect` takes the answers."""
        todo: deque[tuple[list[int], Call[bytes]]] = deque()
        if self.offload is None or len(batch) < WORKER_BATCH:
            return todo
        places = [i for i, p in enumerate(batch) if kill_size(p.submission) <= BIG_KILL]  # Packed ones are bigger
        if len(places) < WORKER_BATCH or not self.offload.ready():
            return todo
        for start in range(0, len(places), WORKER_CHUNK):
            chunk = places[start : start + WORKER_CHUNK]
            payloads = [inbox_payload(batch[i].submission) for i in chunk]  # ~5 us a kill (orjson)
            wanted = [batch[i].live or self.facts_for_all for i in chunk]
            handed = self.offload.prepare(payloads, names, self.prices, wanted)
            if handed is None:
                break  # it died: the rest is made here (a new one starts for a later batch)
            todo.append((chunk, handed))
        return todo

    async def _collect(
        self, batch: list[Pending], names: Mapping[int, str], todo: deque[tuple[list[int], Call[bytes]]]
    ) -> dict[int, Made]:
        """The kills `_hand` gave the worker process, by their place in the batch, as each chunk
        comes back; a chunk the worker did not make (it died) is left out: finish makes those
        here, as usual.

        Each kill is ~0.3 ms of Python on the loop here (enrichment, JSON, the stored document's
        zlib, the participant rows); from the worker the loop only unpacks bytes (~25 us a kill
        plus the preparers) and serves HTTP and commits meanwhile. A lone kill (the live feed)
        stays here: the hop's milliseconds would be its latency.

        The kills go in chunks. While the write before this batch is done (the loop has nothing
        better to do) and the worker is behind (a busy machine, where it runs at a lower
        priority), the loop takes the last chunk the worker has not started back (offload.Claims:
        any of them, not only those the pool has not yet passed on) and makes it itself, so the
        worker never makes a catch-up slower than the loop alone. A batch taken ahead (run)
        waits behind this one in the worker and does not count as a write.
        """
        made: dict[int, Made] = {}
        offload = self.offload
        if offload is None or not todo:
            return made
        while todo:
            chunk, handed = todo[0]
            if not handed.future.done():
                if self.take_back and self.in_flight - self._ahead <= 1 and todo[-1][1].cancel():
                    await self._make_here(batch, todo.pop()[0], names, made)
                else:
                    await asyncio.wait([handed.waiter], timeout=STEAL_POLL)
                    offload.overdue(handed)  # a stuck worker is killed: its chunks are made here
                continue
            todo.popleft()
            # None: the worker died; empty: it did not claim the chunk (Claims). Made here, as usual.
            if answer := await offload.answer(handed):
                self.offloaded += len(chunk)
                for i, g in zip(chunk, kills_of(answer), strict=True):
                    if isinstance(g, str):
                        # What failed there is made here (left out): an acknowledged kill is
                        # dropped only if it fails here too, not for a fault of the worker's.
                        log.warning("kill %d: the worker failed (%s); made here", batch[i].submission.killmail_id, g)
                        continue
                    # Finished as its chunk comes back, while the worker makes the next: after the
                    # last chunk only its own kills are left to finish before the next batch's go.
                    try:
                        made[i] = self._finish(batch[i].submission, g, names), g.facts
                    except Exception as exc:  # raised again, and logged, where the kill is put in the batch
                        made[i] = exc
        return made

    async def _make_here(
        self, batch: list[Pending], chunk: list[int], names: Mapping[int, str], made: dict[int, Made]
    ) -> None:
        for n, i in enumerate(chunk):
            pending, sub = batch[i], batch[i].submission
            try:
                plain = sub.unpacked() if isinstance(sub, Packed) else sub  # a POST's kill parsed there
                made[i] = self._enrich(plain, names, pending.live or self.facts_for_all)
            except Exception as exc:  # raised again, and logged, where the kill is put in the batch
                made[i] = exc
            if n % 16 == 15:
                await asyncio.sleep(0)

    async def _enrich_packed(
        self, sub: Packed, names: Mapping[int, str], facts: bool
    ) -> tuple[NewKill, KillFacts | None]:
        """A fleet fight's enrichment in the worker process; here in a thread if it died."""
        done = await self.offload.enrich(sub, names, self.prices, facts) if self.offload is not None else None
        if done is None:
            plain = await asyncio.to_thread(sub.unpacked)
            return await asyncio.to_thread(self._enrich, plain, names, facts)
        return await asyncio.to_thread(self._finish, sub, done, names), done.facts

    def _finish(self, sub: Submission, done: Enriched, names: Mapping[int, str]) -> NewKill:
        """The worker's kill as _enrich makes it: its stored bytes packed, the preparers run
        (a thread: the entity figures' share of 10,000 pilots is tens of ms of Python)."""
        new = new_kill(sub, done, names, self.store.pack_source)
        for prepare in self.store.preparers:
            prepare(new)
        return new

    def _enrich(self, sub: Submission, names: Mapping[int, str], facts: bool) -> tuple[NewKill, KillFacts | None]:
        """One kill's enrichment; with `facts` also what channels match on, and (when it is big,
        so this runs in a thread) its JSON, so the hub does not encode it on the loop."""
        kill = enrich(sub, self.static, names, self.prices)
        new = build_kill(sub, kill, names, self.store.pack_source)  # packed here, not in the write
        for prepare in self.store.preparers:
            prepare(new)
        if not facts:
            return new, None
        if kill_size(sub) > BIG_KILL:
            new.body  # noqa: B018 - the property encodes and caches the JSON
        return new, kill_facts(kill)

    async def commit(self, prepared: Prepared) -> list[tuple[int, NewKill]]:
        """Store a prepared batch in one transaction, then broadcast its new live kills."""
        batch, kills, live, unresolved = prepared.batch, prepared.kills, prepared.live, prepared.unresolved
        started = time.perf_counter()
        # Broadcast now with what is known; the ESI name filler patches these stored kills later.
        nameless = [p.submission.killmail_id for p in batch if players(p.submission) & unresolved] if unresolved else []
        stored = await self.store.save_kills(
            kills, done=[p.submission.killmail_id for p in batch] + prepared.dropped, names_pending=nameless
        )
        self._announce(stored, len(kills), len(prepared.rejected), prepared.facts, live, started)
        return stored

    def _announce(
        self,
        stored: list[tuple[int, NewKill]],
        enriched: int,
        rejected: int,
        facts: Mapping[int, KillFacts | None],
        live: Mapping[int, bool],
        started: float,
    ) -> None:
        """After a write (a batch's, or a kill's stored alone): the counters, then the on_stored
        hooks in seq order. `enriched`, `rejected`: kills enrichment made and dropped."""
        self.processed += enriched
        if self.metrics is not None:
            self.metrics.batch_commit_seconds.observe(time.perf_counter() - started)
            self.metrics.kills_stored.inc(len(stored))
            if rejected:
                self.metrics.kills_rejected.labels("enrich_failed").inc(rejected)
        cutoff = time.time() - self.live_max_age if self.live_max_age else None
        for seq, kill in stored:
            event = Stored(seq, kill, facts.get(kill.killmail_id), self._is_live(kill, live, cutoff))
            for hook in self.on_stored:
                hook(event)

    def _is_live(self, kill: NewKill, live: Mapping[int, bool], cutoff: float | None) -> bool:
        """Whether a stored kill goes to the sockets: not an import, not older than the live cut-off."""
        if not live.get(kill.killmail_id, True):
            return False
        if cutoff is not None and kill.kill_time < cutoff:
            log.info(
                "kill %d stored but not pushed live: kill time older than %d s", kill.killmail_id, self.live_max_age
            )
            return False
        return True

    async def _names(self, batch: Iterable[Pending]) -> tuple[dict[int, str], set[int]]:
        """(names known, ids still without one after asking ESI)."""
        ids: set[int] = set()
        for pending in batch:
            ids.update(players(pending.submission))
        if not ids:
            return {}, set()
        names = await self.store.names(ids)
        missing = ids - names.keys()
        if missing and self.resolve_names is not None:
            names.update(await self.resolve_names(missing))
            return names, missing - names.keys()
        return names, set()

    async def _complete(self, batch: list[Pending]) -> tuple[list[Pending], list[int]]:
        """Fetch the ESI body of id+hash-only kills: (ready to enrich, ids to drop from the inbox).

        A kill whose fetch fails for now stays in the inbox and is queued again after a delay.
        """
        incomplete = [p for p in batch if p.submission.esi is None]
        if not incomplete:
            return batch, []
        results = await asyncio.gather(*(self._fetch(p.submission) for p in incomplete), return_exceptions=True)
        fetched: dict[int, Pending] = {}
        dropped: list[int] = []
        for pending, result in zip(incomplete, results, strict=True):
            sub = pending.submission
            if isinstance(result, Submission):
                fetched[sub.killmail_id] = Pending(result, pending.live)
                self._attempts.pop(sub.killmail_id, None)
            elif isinstance(result, KillmailGone | ValueError):
                log.warning("kill %d dropped: %s", sub.killmail_id, result)
                self._attempts.pop(sub.killmail_id, None)
                dropped.append(sub.killmail_id)
            else:
                self._retry_later(pending, result)
        ready = [fetched.get(p.submission.killmail_id, p) for p in batch]
        return [p for p in ready if p.submission.esi is not None], dropped

    async def _fetch(self, sub: Submission) -> Submission:
        if self.fetch_killmail is None:
            raise RuntimeError("no ESI access (upstream off)")
        esi = await self.fetch_killmail(sub.killmail_id, sub.killmail_hash)
        errors = check_esi(esi)
        if not errors and esi.get("killmail_id") != sub.killmail_id:
            errors = [f"killmail_id: ESI returned {esi.get('killmail_id')} for {sub.killmail_id}"]
        if errors:
            raise ValueError(f"ESI body is not a valid killmail: {'; '.join(errors[:3])}")
        return Submission(sub.killmail_id, sub.killmail_hash, esi, sub.zkb)

    def _retry_later(self, pending: Pending, error: BaseException) -> None:
        kill_id = pending.submission.killmail_id
        attempt = self._attempts.get(kill_id, 0) + 1
        self._attempts[kill_id] = attempt
        # The exponent stops where RETRY_MAX is long reached: 2.0**1024 raises OverflowError, and
        # after ~1,000 failed fetches of one kill the worker would retry its batch until ESI answered.
        delay = min(RETRY_MAX, 2.0 ** min(attempt, 20))
        log.warning("kill %d: ESI body not fetched (%s); kept in the inbox, retry in %.0f s", kill_id, error, delay)
        asyncio.get_running_loop().call_later(delay, self._requeue, pending)

    def _requeue(self, pending: Pending) -> None:
        try:
            self.queue.put_nowait(pending)
        except asyncio.QueueFull:
            asyncio.get_running_loop().call_later(1.0, self._requeue, pending)
            return
        self._idle.clear()


def kill_size(sub: Submission) -> int:
    """Attackers plus top-level items: what enrichment's cost grows with."""
    if isinstance(sub, Packed):
        return sub.size
    esi = sub.esi or {}
    return len(esi.get("attackers") or ()) + len((esi.get("victim") or {}).get("items") or ())


def players(sub: Submission) -> set[int]:
    """Character, corporation and alliance ids of a kill (codec.player_ids)."""
    return sub.player_ids() if isinstance(sub, Packed) else player_ids(sub.esi or {})


def build_kill(
    sub: Submission,
    kill: dict[str, Any],
    names: Mapping[int, str] | None = None,
    pack: Callable[[bytes], bytes] | None = None,
) -> NewKill:
    """The kill to store; with `pack` (Store.pack_source), its stored bytes made now."""
    when = parse_time(kill["kill_time"])
    assert when is not None
    esi = sub.esi or {}
    source = source_document(esi, sub.zkb, kill_prices(kill))
    return NewKill(
        killmail_id=sub.killmail_id,
        killmail_hash=sub.killmail_hash,
        kill_time=int(when.timestamp()),
        system_id=kill["system_id"],
        total_value=kill["total_value"],
        _body=b"",
        source=source,
        names={i: names[i] for i in player_ids(esi) if i in names} if names else {},
        enriched=kill,
        participation=participation(kill, packed=pack is not None),  # here: off the loop for a big kill
        packed=pack(source) if pack is not None else b"",
    )
