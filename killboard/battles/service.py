"""The battles subsystem's one entry point: detection in the kills' transaction, the live
channels after the commit, summaries for the API and pages, and the rebuild."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from ..ingest.pipeline import Stored
from ..kill.staticdata import StaticData
from ..live.hub import Hub
from ..storage import participants
from ..storage.battle_tables import REBUILD_NEEDED
from ..storage.rows import NewKill
from ..storage.store import Store
from . import catchup, items, summary, tables
from .detect import Changes, Detector
from .live import BattleChannels
from .summary import Lost

log = logging.getLogger(__name__)

# Seq -> battle of the kills the last transactions put in battles, until their on_stored hook runs.
PENDING_MAX = 100_000
BIG_PILOTS = 1000  # a summary of more pilots than this (~2 ms) is worked out in a thread
SUMMARY_THREADS = 2  # large summaries worked out at once (the rest wait their turn)
SUMMARY_CACHE = 256  # summaries kept, keyed by battle and its last kill
READ_CHUNK = 500  # kills whose items are read at once (one query, one thread hop: ~0.05 ms a kill)
LOST_KEPT = 200_000  # kills whose items' sums are kept (~150 bytes each: ~30 MB at most)
# A state key `battles rebuild` bumps in its own transaction: a server on the same database
# tells a rebuild from any other process's write (an import's kills are folded into memory,
# catchup.py; a rebuild replaces all battles, ids included) and reloads its detector.
REBUILT = "battles.rebuilt"
# Kills of other processes folded into memory per write transaction when a foreign commit is
# noticed (~60 us each in the database thread, mostly unpacking their pilots): the write lock,
# which this server's own next batch waits for too, is held some 30-60 ms at most.
CATCH_UP = 500


class Battles:
    """Battles detected as kills are stored (store.writers), pruned with them (store.pruners)."""

    def __init__(self, store: Store, static: StaticData, hub: Hub | None = None, replay_max: int = 1000) -> None:
        self.store = store
        self.static = static
        self.detector = Detector()
        self.hub = hub
        self.channels = BattleChannels(hub, store, self.summary, replay_max) if hub is not None else None
        self._pending: OrderedDict[int, int] = OrderedDict()
        self._merged: list[tuple[int, int]] = []
        # Battles the last transaction started with kills stored before it: changed, after the commit.
        self._started: list[int] = []
        self._unconfirmed: int | None = None  # the last seq of the batch the writer saw last
        self._cache: OrderedDict[tuple[int, int, int], dict[str, Any]] = OrderedDict()
        self._lost: OrderedDict[int, Lost] = OrderedDict()  # killmail id -> its items summed
        # Kills rewritten or pruned while `_items` reads, one set per read in progress (None in
        # a set: everything went): what such a read got for them may be stale, so it keeps none.
        self._reading: list[set[int | None]] = []
        self._task: asyncio.Task[None] | None = None
        self._threads = asyncio.Semaphore(SUMMARY_THREADS)
        self._rebuilt: str | None = None  # REBUILT when the detector was loaded
        # The highest seq the detector has seen (loaded, written, or folded in from another
        # process's commits): kills above it that this process did not write are another's.
        self._seq = 0
        self._reloading: asyncio.Task[None] | None = None
        self._look_again = False  # another process wrote while a look for a rebuild ran
        self.reloads = 0  # detectors loaded again after a rebuild by another process (tests)
        self.caught = 0  # kills other processes stored, folded into the detector (tests)

    @classmethod
    async def start(cls, store: Store, static: StaticData, hub: Hub | None = None, replay_max: int = 1000) -> Battles:
        service = cls(store, static, hub, replay_max)
        if await store.get_state(REBUILD_NEEDED):
            log.warning("battles: kills stored before battles existed are in none; run `python app.py battles rebuild`")
        await store.transact(service._load)
        store.writers.append(service.write)
        store.pruners.append(service.prune)
        store.on_changed.append(service.rewritten)
        if service.channels is not None:
            service._task = asyncio.create_task(service.channels.run(), name="killboard-battles-live")
        return service

    async def stop(self) -> None:
        for hooks, hook in (
            (self.store.writers, self.write),
            (self.store.pruners, self.prune),
            (self.store.on_changed, self.rewritten),
        ):
            with suppress(ValueError):
                hooks.remove(hook)  # type: ignore[arg-type]
        for task in (self._task, self._reloading):
            if task is not None:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task

    def _load(self, db: sqlite3.Connection, skip: set[int] | None = None) -> bool:
        """In the database thread, with the write lock: the open battles and loose kills from the
        database into a new detector, at the start and when a rebuild replaced the battles since
        (REBUILT moved); whether it loaded. `skip`: the kills of the batch being written."""
        row = db.execute("SELECT value FROM state WHERE key = ?", (REBUILT,)).fetchone()
        rebuilt = str(row[0]) if row else ""
        if rebuilt == self._rebuilt:
            return False
        detector = Detector()
        tables.load(db, detector, self.static, skip=skip)
        if self._rebuilt is not None:
            self.reloads += 1
            log.info("battles: rebuilt by another process; open battles loaded again")
        self.detector, self._rebuilt = detector, rebuilt
        self._unconfirmed = None  # memory is what the database holds now
        self._seq = _top(db)  # the batch being written (`skip`) is detected next
        return True

    def elsewhere(self) -> None:
        """Another process committed (web/foreign.py): the kept summaries go (`forget`); if it
        was `battles rebuild`, the detector is loaded again now, so that the next live kill joins
        the rebuilt battles, not the ones memory held before (renumbered, merged or gone); if it
        stored kills (an import, a second server), they are folded into the detector, so a live
        kill joins the battles they made. Neither makes the next write wait (`write` looks too,
        so none can slip in between)."""
        self.forget()
        if self._reloading is not None and not self._reloading.done():
            self._look_again = True  # the running look may have read the state before this write
            return
        self._reloading = asyncio.create_task(self._look(), name="killboard-battles-reload")

    async def _look(self) -> None:
        """Per foreign write, two reads on the reader (no lock): REBUILT, and the highest seq. Only
        a change takes the write lock: a reload, or the new kills CATCH_UP at a time (incremental,
        however long the import), each in the database thread, off the event loop."""
        while True:
            self._look_again = False
            try:
                if (await self.store.get_state(REBUILT) or "") != self._rebuilt:
                    await self.store.transact(self._load)
                [(top,)] = await self.store.query("SELECT max(seq) FROM kills")
                while (top or 0) > self._seq:
                    caught = await self.store.transact(self._catch_up)
                    if caught is None:
                        break
                    self._tell(caught.touched, caught.merged)  # on the loop, after the commit
                    if caught.count < CATCH_UP:
                        break
            except (sqlite3.Error, ValueError) as exc:  # ValueError: aiosqlite's closed connection
                log.warning("battles: could not look for other processes' battles (%s)", exc)
            if not self._look_again:
                return

    def _catch_up(self, db: sqlite3.Connection) -> catchup.Caught | None:
        """In the database thread, under the write lock: the next kills other processes stored,
        into the detector (None: a rebuild had replaced the battles, and they were loaded)."""
        if self._load(db):
            return None
        caught = catchup.fold(db, self.detector, self.static, self._seq, limit=CATCH_UP, breathe=_breathe)
        self._seq = max(self._seq, caught.last)
        self.caught += caught.count
        return caught

    def _tell(self, touched: Collection[int], merged: Sequence[tuple[int, int]]) -> None:
        """The followers of battles another process changed get their frames (the battle's
        latest state; no kill frames: the kills did not pass through this process's hub)."""
        if self.channels is None:
            return
        for gone, kept in merged:
            self.channels.merged(gone, kept)
        for battle_id in sorted(touched):
            self.channels.changed(battle_id)

    # -- in the kills' transaction ---------------------------------------------------------

    def write(self, db: sqlite3.Connection, new: Sequence[tuple[int, NewKill]]) -> None:
        """The store's writer: in the database thread, inside the kills' transaction (Store.transact).

        Only this (and `prune`, under the same lock) touches the detector, so it may run in
        that thread; what the event loop reads (`_pending`, `_merged`, `_started`) is read by
        on_stored, which runs after the transaction returned."""
        if not new:
            return
        batch = {seq for seq, _ in new}
        # A rebuild by another process committed since the last load: the detector is loaded
        # again first (one primary-key read a batch when none did).
        if not self._load(db, batch) and self._unconfirmed is not None:
            # The last batch's transaction may have rolled back after this ran (a full disk):
            # then memory holds kills and battles the database does not (and the seqs may be
            # given again, to other kills), and is read again.
            last, self._unconfirmed = self._unconfirmed, None
            gone = last in batch
            if not gone:
                gone = db.execute("SELECT 1 FROM kills WHERE seq = ?", (last,)).fetchone() is None
            if gone:
                log.warning("battles: the last batch was rolled back; reloading battle state")
                self.detector = Detector()
                # What the rolled-back batch left for on_stored never happened either.
                self._merged.clear()
                self._started.clear()
                for seq in [s for s in self._pending if s >= min(batch)]:  # its seqs are given again
                    del self._pending[seq]
                tables.load(db, self.detector, self.static, skip=batch)  # this batch comes next
                self._seq = _top(db)
        # Kills another process stored since the detector last looked (an import beside the
        # server; the poll folds them in within 0.25 s, but this batch may come first): into
        # memory before this batch is detected, as one process would have seen them. One
        # primary-key range read a batch when there are none.
        if self._seq < min(batch):
            caught = catchup.fold(db, self.detector, self.static, self._seq, before=min(batch), breathe=_breathe)
            self.caught += caught.count
            if self.channels is not None:
                self._merged += caught.merged
                self._started += sorted(caught.touched)
        self._seq = max(self._seq, max(batch))
        self._unconfirmed = max(batch)  # checked at the next batch: did this one commit?
        changes = Changes()
        # Late kills (an import, a backlog out of time order) each read their system's battles
        # back (two queries inside the write transaction); kills of one system at the same second
        # (a fleet fight's, a replayed backlog) read the same rows: once per batch is enough.
        hydrated: set[tuple[int, int, int]] = set()
        ahead = set(batch)  # the batch's kills not detected yet: a hydrate must not pool them first
        for seq, kill in new:
            p = tables.point(seq, kill.kill_time, kill.system_id, kill.total_value, _pilots(kill), self.static)
            if not self.detector.knows(p.time) and (where := (p.constellation, p.system, p.time)) not in hydrated:
                hydrated.add(where)
                tables.hydrate(db, self.detector, p, self.static, ahead, changes)
            ahead.discard(seq)
            self.detector.add((p,), changes)
        if not changes:
            return
        tables.write(db, self.detector, changes)
        if self.channels is None:
            return  # an import: nobody follows battles in this process
        assigned = changes.resolved()
        for seq, battle_id in assigned:
            self._pending[seq] = battle_id
        while len(self._pending) > PENDING_MAX:
            self._pending.popitem(last=False)
        self._merged += changes.merged
        # Kills already stored (the first ones of a new battle) send no kill frame: only the
        # battle's frame says it started (on_stored marks it changed, after the commit).
        for seq, battle_id in assigned:
            if seq not in batch:
                self._pending.pop(seq, None)
                self._started.append(battle_id)

    def prune(self, db: sqlite3.Connection, seqs: Sequence[int]) -> None:
        """The store's pruner, in the database thread like `write`."""
        for battle_id in tables.prune(db, seqs):
            self.detector.unload(battle_id)  # read again from the database if a late kill needs it

    # -- after the commit ------------------------------------------------------------------

    def on_stored(self, stored: Stored) -> None:
        """The pipeline's hook: a kill that joined a battle goes to the battle's followers."""
        battle_id = self._pending.pop(stored.seq, None)
        if self.channels is None:
            return
        for gone, kept in self._merged:
            self.channels.merged(gone, kept)
        self._merged.clear()
        for started in self._started:
            self.channels.changed(started)
        self._started.clear()
        if battle_id is not None and stored.live:
            kill = stored.kill
            self.channels.kill(stored.seq, battle_id, lambda: kill.body)
        elif battle_id is not None:
            self.channels.changed(battle_id)  # an import: the battle changes, no kill frame

    # -- reads -------------------------------------------------------------------------------

    async def summary(
        self,
        battle_id: int,
        moves: Mapping[int, int] | None = None,
        detail: bool = False,
        now: float | None = None,
    ) -> dict[str, Any] | None:
        row = await tables.get(self.store, battle_id)
        if row is None or row.merged_into is not None:
            return None
        return await self.summarize(row, moves, detail, now)

    async def summarize(
        self,
        row: tables.BattleRow,
        moves: Mapping[int, int] | None = None,
        detail: bool = False,
        now: float | None = None,
    ) -> dict[str, Any]:
        now = time.time() if now is None else now
        key = (row.battle_id, row.last_seq, row.kill_count)
        cacheable = not moves and not detail
        if cacheable and (hit := self._cache.get(key)) is not None:
            self._cache.move_to_end(key)
            return {**hit, "ongoing": row.ongoing(now)}
        kills = await tables.kills(self.store, row.battle_id)
        items: dict[int, Lost] | None = None
        if detail:
            items = await self._items([k.killmail_id for k in kills])

        # Sides of a battle of thousands of pilots take tens of ms: never on the loop. In the
        # thread, the work lets go of the GIL every few kills, so the loop is not kept waiting
        # for Python's 5 ms switch interval again and again.
        # The detail view (ships, classes, a timeline: ~10-40 ms for a few hundred kills) always.
        if detail or sum(len(k.pilots) for k in kills) > BIG_PILOTS:
            async with self._threads:  # bounded: a few at a time, however many readers ask
                data = await asyncio.to_thread(
                    summary.summarize, row, kills, moves, self._group_of, items, detail, now, _breathe
                )
        else:
            data = summary.summarize(row, kills, moves, self._group_of, items, detail, now)
        if cacheable:
            self._cache[key] = data
            while len(self._cache) > SUMMARY_CACHE:
                self._cache.popitem(last=False)
        return data

    def rewritten(self, killmail_ids: Collection[int]) -> None:
        """Stored kills changed (a corrected body) or went: their items' sums go too."""
        for changed in self._reading:
            changed.update(killmail_ids)
        for killmail_id in killmail_ids:
            self._lost.pop(killmail_id, None)

    def forget(self) -> None:
        """Drop the kept summaries and items' sums: another process rewrote battles (`app.py
        battles rebuild`) or kills (its rewrites reach no hook here)."""
        for changed in self._reading:
            changed.add(None)
        self._lost.clear()
        self._cache.clear()

    async def _items(self, killmail_ids: list[int]) -> dict[int, Lost]:
        """What each victim's items came to. Kept by kill until it is rewritten or pruned
        (`rewritten`), so a battle's page after a new kill reads that kill only. The others are
        worked out from their stored rows in a thread (battles/items.py: no render); a kill
        stored before its prices were kept is rendered by the store (off the loop) instead."""
        out: dict[int, Lost] = {}
        missing = []
        for killmail_id in killmail_ids:
            if (kept := self._lost.get(killmail_id)) is not None:
                self._lost.move_to_end(killmail_id)
                out[killmail_id] = kept
            else:
                missing.append(killmail_id)
        changed: set[int | None] = set()
        self._reading.append(changed)
        try:
            for i in range(0, len(missing), READ_CHUNK):
                chunk = missing[i : i + READ_CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = await self.store.query(
                    f"SELECT killmail_id, codec, body FROM kills WHERE killmail_id IN ({marks})", chunk
                )
                found, unpriced = await asyncio.to_thread(items.lost_of_rows, rows, self.store.unpack)
                out.update(found)
                if unpriced:
                    bodies = [k.body for k in await self.store.many(unpriced)]
                    out.update(await asyncio.to_thread(items.lost_of_bodies, bodies))
        finally:
            self._reading = [c for c in self._reading if c is not changed]  # not remove(): sets compare equal
        if None not in changed:
            for killmail_id in missing:
                if killmail_id in out and killmail_id not in changed:
                    self._lost[killmail_id] = out[killmail_id]
        while len(self._lost) > LOST_KEPT:
            self._lost.popitem(last=False)
        return out

    def _group_of(self, type_id: int) -> int:
        info = self.static.types.get(type_id)
        return info.group_id if info is not None else 0

    async def resolve(self, battle_id: int) -> tuple[tables.BattleRow | None, int | None]:
        """(the battle, None), or (None, the id it merged into), or (None, None): unknown."""
        row = await tables.get(self.store, battle_id)
        if row is None:
            return None, None
        if row.merged_into is not None:
            return None, row.merged_into
        return row, None


def _top(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT max(seq) FROM kills").fetchone()[0] or 0)


def _breathe() -> None:
    time.sleep(0)  # releases the GIL: a waiting event loop runs now


def _pilots(kill: NewKill) -> Sequence[Sequence[int]]:
    if kill.participation is not None:
        return kill.participation.pilots
    if kill.enriched is not None:
        return participants.participation(kill.enriched).pilots
    return ()


@dataclass(frozen=True, slots=True)
class Rebuilt:
    battles: int
    kills: int  # kills in battles
    late: int  # kills stored while the rebuild read (by a server beside it), detected in its write


_POINTS = "SELECT k.seq, k.kill_time, k.system_id, k.total_value, p.pilots FROM kills k JOIN participants p USING (seq)"
REDETECT = 3  # detections from scratch (off the write lock) when kills older than memory came meanwhile


async def rebuild(store: Store, static: StaticData, chunk: int = 2000) -> Rebuilt:
    """Recompute every battle from the stored kills (`python app.py battles rebuild`). Old ids
    are kept where a rebuilt battle holds their kills, and redirect where they merged.

    The detection runs in a thread, a chunk at a time, over the kills stored when it began.
    Those stored since (a server or an import beside it) are detected in the final write
    transaction, after the others, in kill-time order, so the rebuild leaves none in no battle.
    A kill among them older than the detector's memory reaches (6 h before the newest: an
    import of yesterday's kills) would be detected apart from its fight: then the detection
    starts over, and in the final transaction (under the write lock) only if it must."""
    for _ in range(REDETECT):
        [(watermark,)] = await store.query("SELECT coalesce(max(seq), 0) FROM kills")
        detector, changes = Detector(), Changes()
        detector.closed = []
        last, last_seq = -1, 0
        while True:
            page = await store.query(
                f"{_POINTS} WHERE (k.kill_time, k.seq) > (?, ?) AND k.seq <= ? ORDER BY k.kill_time, k.seq LIMIT ?",
                (last, last_seq, watermark, chunk),
            )
            if not page:
                break
            last, last_seq = page[-1][1], page[-1][0]
            await asyncio.to_thread(_detect, detector, changes, page, static)
        [(oldest,)] = await store.query("SELECT min(kill_time) FROM kills WHERE seq > ?", (watermark,))
        if oldest is None or detector.knows(oldest):
            break

    def replace(db: sqlite3.Connection) -> Rebuilt:
        nonlocal detector, changes
        # Under the write lock: nothing is stored between this read and the commit.
        late = db.execute(f"{_POINTS} WHERE k.seq > ? ORDER BY k.kill_time, k.seq", (watermark,)).fetchall()
        if late and not detector.knows(late[0][1]):
            detector, changes = Detector(), Changes()
            detector.closed = []
            for page in _pages(db.execute(f"{_POINTS} ORDER BY k.kill_time, k.seq"), chunk):
                _detect(detector, changes, page, static)
        else:
            _detect(detector, changes, late, static)
        # The ids kills are in now (a server beside the rebuild may have made or merged some),
        # the ids that redirect (battles merged before), and the highest id ever given.
        old = dict(db.execute("SELECT seq, battle_id FROM battle_kills").fetchall())
        merged = dict(db.execute("SELECT battle_id, merged_into FROM battles WHERE merged_into IS NOT NULL"))
        [(top,)] = db.execute("SELECT coalesce(max(battle_id), 0) FROM battles").fetchall()
        assigned, rename, redirect = _renumber(changes, old, top)
        _keep_redirects(redirect, merged, set(rename.values()))
        battle_rows = [
            tables.row_of(b, rename[b.battle_id])
            for b in [*(detector.closed or ()), *detector.battles.values()]
            if b.battle_id in rename
        ]
        db.execute("DELETE FROM battle_kills")
        db.execute("DELETE FROM battles")
        db.executemany("INSERT INTO battle_kills (seq, battle_id) VALUES (?, ?)", [(s, rename[b]) for s, b in assigned])
        db.executemany(
            "INSERT INTO battles (battle_id, merged_into, system_ids, constellation_id, region_id, start_time,"
            " end_time, kill_count, isk_destroyed, last_seq) VALUES (?, NULL, ?, ?, ?, ?, ?, ?, ?, ?)",
            battle_rows,
        )
        db.executemany(
            "INSERT INTO battles (battle_id, merged_into, system_ids, constellation_id, region_id, start_time,"
            " end_time, kill_count, isk_destroyed, last_seq) VALUES (?, ?, '[]', 0, 0, 0, 0, 0, 0, 0)",
            sorted(redirect.items()),
        )
        db.execute("DELETE FROM state WHERE key = ?", (REBUILD_NEEDED,))
        # Servers on this database load their open battles again (Battles.elsewhere).
        db.execute(
            "INSERT INTO state (key, value) VALUES (?, '1')"
            " ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
            (REBUILT,),
        )
        return Rebuilt(len(rename), len(assigned), len(late))

    return await store.transact(replace)


def _pages(cursor: sqlite3.Cursor, size: int) -> Iterator[list[tuple[Any, ...]]]:
    while page := cursor.fetchmany(size):
        yield page


def _keep_redirects(redirect: dict[int, int], merged: Mapping[int, int], live: Collection[int]) -> None:
    """Ids that redirected before the rebuild (battles merged into others) go on redirecting, to
    where the battle they pointed at is now: a link shared once never shows another fight. An id
    whose battle is in none now (its kills were pruned, or make no battle) goes."""
    for gone, into in merged.items():
        if gone in live or gone in redirect:
            continue  # cannot happen (a merged id holds no kill), but a rebuilt battle wins
        target = into if into in live else redirect.get(into)
        if target is not None and target != gone:
            redirect[gone] = target


def _detect(detector: Detector, changes: Changes, rows: Sequence[tuple[Any, ...]], static: StaticData) -> None:
    """A rebuild's detection of stored kills in kill-time order (in a thread, or the database's)."""
    for i, (s, t, sy, v, b) in enumerate(rows):
        detector.add((tables.point(s, t, sy, v, participants.unpack(b), static),), changes)
        if i % 32 == 31:
            _breathe()  # a rebuild beside a running server: the loop gets the GIL


def _renumber(
    changes: Changes, old: Mapping[int, int], top: int = 0
) -> tuple[list[tuple[int, int]], dict[int, int], dict[int, int]]:
    """(each kill's battle, the rebuilt battles' ids, old ids -> where they redirect): a rebuilt
    battle takes the smallest old id among its kills that is still free; a new one an id above
    `top` (the highest ever given: an id that redirects is never given to another battle)."""
    assigned = changes.resolved()
    members: dict[int, list[int]] = {}
    for seq, b in assigned:
        members.setdefault(b, []).append(seq)
    taken: set[int] = set()
    rename: dict[int, int] = {}
    for b in sorted(members, key=lambda b: min(members[b])):
        olds = sorted({old[s] for s in members[b] if s in old} - taken)
        if olds:
            rename[b] = olds[0]
            taken.add(olds[0])
    top = max([*old.values(), *rename.values(), top])
    for b in sorted(members):
        if b not in rename:
            top += 1
            rename[b] = top
    redirect: dict[int, int] = {}
    for b, seqs in members.items():
        for s in seqs:
            if s in old and old[s] not in taken:
                redirect.setdefault(old[s], rename[b])
    return assigned, rename, redirect
