"""Battles in SQLite: written from the detector's changes inside the kills' transaction, pruned
with the kills, read back for the API, the pages and the live frames (storage/battle_tables.py
holds the schema)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import ujson

from ..storage import participants
from ..storage.store import Store
from .detect import GAP, HORIZON, Battle, Changes, Detector, Point

BIG_BLOBS = 8 * 1024  # bytes of packed pilots unpacked on the loop at most (~2 ms)
_COLUMNS = (
    "battle_id, merged_into, system_ids, constellation_id, region_id, start_time, end_time, kill_count,"
    " isk_destroyed, last_seq"
)


@dataclass(frozen=True, slots=True)
class BattleRow:
    battle_id: int
    merged_into: int | None
    system_ids: list[int]
    constellation_id: int
    region_id: int
    start_time: int
    end_time: int
    kill_count: int
    isk_destroyed: float
    last_seq: int

    @classmethod
    def of(cls, row: Sequence[Any]) -> BattleRow:
        return cls(row[0], row[1], ujson.loads(row[2]), *row[3:])

    def ongoing(self, now: float) -> bool:
        return self.end_time + GAP > now


def _battle(row: BattleRow) -> Battle:
    return Battle(
        row.battle_id,
        set(row.system_ids),
        row.constellation_id,
        row.region_id,
        row.start_time,
        row.end_time,
        row.kill_count,
        row.isk_destroyed,
        row.last_seq,
    )


def row_of(b: Battle, battle_id: int | None = None) -> tuple[Any, ...]:
    """A battle's row of the battles table (without merged_into), as `write` and a rebuild store it."""
    return (
        b.battle_id if battle_id is None else battle_id,
        ujson.dumps(sorted(b.systems)),
        b.constellation,
        b.region,
        b.start,
        b.end,
        b.kill_count,
        b.isk,
        b.last_seq,
    )


def write(db: sqlite3.Connection, detector: Detector, changes: Changes) -> None:
    """Store what one batch changed: new and grown battles, each kill's battle, merges."""
    if changes.created:
        row = db.execute("SELECT max(battle_id) FROM battles").fetchone()
        if row and row[0] is not None and row[0] >= min(changes.created):
            detector.renumber(changes, int(row[0]))
    for gone, keep in changes.merged:
        db.execute("UPDATE battle_kills SET battle_id = ? WHERE battle_id = ?", (keep, gone))
        db.execute("UPDATE battles SET merged_into = ? WHERE battle_id = ? OR merged_into = ?", (keep, gone, gone))
    if changes.assigned:
        db.executemany(
            "INSERT INTO battle_kills (seq, battle_id) VALUES (?, ?)"
            " ON CONFLICT DO UPDATE SET battle_id = excluded.battle_id",
            changes.resolved(),
        )
    rows = []
    for battle_id in sorted(changes.touched):
        b = detector.battles.get(battle_id)
        if b is not None:
            rows.append(row_of(b))
    if rows:
        db.executemany(
            "INSERT INTO battles (battle_id, merged_into, system_ids, constellation_id, region_id, start_time,"
            " end_time, kill_count, isk_destroyed, last_seq) VALUES (?, NULL, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (battle_id) DO UPDATE SET system_ids = excluded.system_ids, start_time = excluded.start_time,"
            " end_time = excluded.end_time, kill_count = excluded.kill_count, isk_destroyed = excluded.isk_destroyed,"
            " last_seq = excluded.last_seq, merged_into = NULL",
            rows,
        )


def prune(db: sqlite3.Connection, seqs: Sequence[int]) -> list[int]:
    """Retention removes these kills: take them out of their battles (a battle left with no kill
    goes, with the ids that redirected to it). Returns the battles that changed."""
    changed: set[int] = set()
    for i in range(0, len(seqs), 500):
        chunk = list(seqs[i : i + 500])
        marks = ",".join("?" * len(chunk))
        changed.update(
            row[0] for row in db.execute(f"SELECT DISTINCT battle_id FROM battle_kills WHERE seq IN ({marks})", chunk)
        )
        db.execute(f"DELETE FROM battle_kills WHERE seq IN ({marks})", chunk)
    for battle_id in sorted(changed):
        row = db.execute(
            "SELECT count(*), min(k.kill_time), max(k.kill_time), coalesce(sum(k.total_value), 0), max(k.seq)"
            " FROM battle_kills b JOIN kills k USING (seq) WHERE b.battle_id = ?",  # the pruned rows are gone
            (battle_id,),
        ).fetchone()
        if row is None or not row[0]:
            db.execute("DELETE FROM battles WHERE battle_id = ? OR merged_into = ?", (battle_id, battle_id))
        else:
            db.execute(
                "UPDATE battles SET kill_count = ?, start_time = ?, end_time = ?, isk_destroyed = ?, last_seq = ?"
                " WHERE battle_id = ?",
                (row[0], row[1], row[2], row[3], row[4], battle_id),
            )
    return sorted(changed)


def point(
    seq: int, kill_time: int, system_id: int, value: float, pilots: Sequence[Sequence[int]], static: Any
) -> Point:
    """A stored kill as detection sees it (`static`: the StaticData, for the constellation)."""
    system = static.systems.get(system_id)
    if system is None:
        return Point(seq, kill_time, system_id, 0, 0, value, None, pilots)
    return Point(seq, kill_time, system_id, system.constellation_id, system.region_id, value, None, pilots)


def _fetch(db: sqlite3.Connection, sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
    # In the database thread, inside the kills' write transaction (Store.transact): a hydrate is
    # two of these per late kill, and no longer a hop to the event loop each.
    return db.execute(sql, tuple(args)).fetchall()


def load(db: sqlite3.Connection, detector: Detector, static: Any, skip: set[int] | None = None) -> None:
    """Open battles and recent kills outside any battle, from the database, into memory
    (`skip`: kills of the batch being written, which the detector is about to be given)."""
    newest = _fetch(db, "SELECT max(kill_time) FROM kills", ())[0][0] or 0
    since = newest - HORIZON - GAP
    top = _fetch(db, "SELECT max(battle_id) FROM battles", ())[0][0] or 0
    detector.next_id = max(detector.next_id, top + 1)
    for row in _fetch(db, f"SELECT {_COLUMNS} FROM battles WHERE end_time >= ? AND merged_into IS NULL", (since,)):
        detector.load_battle(_battle(BattleRow.of(row)))
    _pool(db, detector, static, "k.kill_time >= ?", (since,), skip or set())
    detector.newest = max(detector.newest, newest)


def hydrate(
    db: sqlite3.Connection, detector: Detector, p: Point, static: Any, ahead: set[int], changes: Changes
) -> None:
    """A kill older than memory reaches: bring its system's battles and loose kills of that time
    back from the database first (an import of old kills, a kill posted days late). `ahead`: the
    batch's kills not detected yet (stored, but the detector is about to be given them; those it
    was given are read back as any stored kill, should memory have moved past them). `changes`:
    what this batch did so far, which the database does not hold yet (it is written after the
    batch): kills it put in battles stay out of the loose pool, battles it merged away stay gone."""
    rows = _fetch(
        db,
        f"SELECT {_COLUMNS} FROM battles WHERE end_time >= ? AND start_time <= ? AND merged_into IS NULL"
        " AND constellation_id = ?",
        (p.time - GAP, p.time + GAP, p.constellation),
    )
    for row in rows:
        if int(row[0]) not in detector.battles and int(row[0]) not in changes.redirect:
            detector.load_battle(_battle(BattleRow.of(row)))
    _pool(
        db,
        detector,
        static,
        "k.system_id = ? AND k.kill_time BETWEEN ? AND ?",
        (p.system, p.time - 2 * GAP, p.time + 2 * GAP),
        ahead.union(seq for seq, _ in changes.assigned) if changes.assigned else ahead,
    )


def _pool(
    db: sqlite3.Connection, detector: Detector, static: Any, where: str, args: Sequence[Any], skip: set[int]
) -> None:
    rows = _fetch(
        db,
        "SELECT k.seq, k.kill_time, k.system_id, k.total_value, p.pilots FROM kills k"
        " JOIN participants p USING (seq) LEFT JOIN battle_kills b USING (seq)"
        f" WHERE b.seq IS NULL AND {where} ORDER BY k.kill_time LIMIT 20000",
        args,
    )
    for seq, t, system, value, blob in rows:
        if seq not in skip:
            detector.load_pooled(point(seq, t, system, value, participants.unpack(blob), static))


# -- reads (the reader connection, through Store.query) -------------------------------------


async def get(store: Store, battle_id: int) -> BattleRow | None:
    rows = await store.query(f"SELECT {_COLUMNS} FROM battles WHERE battle_id = ?", (battle_id,))
    return BattleRow.of(rows[0]) if rows else None


async def listing(
    store: Store,
    limit: int,
    before: tuple[int, int] | None = None,
    system: int | None = None,
    region: int | None = None,
    min_kills: int = 0,
    ongoing_after: int | None = None,
) -> list[BattleRow]:
    """Battles newest first (by start time, then id), after the cursor `before`."""
    where = ["merged_into IS NULL", "kill_count >= ?"]
    args: list[Any] = [min_kills]
    if before is not None:
        where.append("(start_time, battle_id) < (?, ?)")
        args += before
    if system is not None:
        where.append("EXISTS (SELECT 1 FROM json_each(system_ids) WHERE value = ?)")
        args.append(system)
    if region is not None:
        where.append("region_id = ?")
        args.append(region)
    if ongoing_after is not None:
        where.append("end_time > ?")
        args.append(ongoing_after)
    sql = f"SELECT {_COLUMNS} FROM battles WHERE {' AND '.join(where)} ORDER BY start_time DESC, battle_id DESC LIMIT ?"
    return [BattleRow.of(r) for r in await store.query(sql, (*args, limit))]


async def changed_since(store: Store, seq: int, limit: int) -> list[BattleRow]:
    """Battles a kill after `seq` changed (a `since` resume of the battles channel), oldest first."""
    rows = await store.query(
        f"SELECT {_COLUMNS} FROM battles WHERE last_seq > ? AND merged_into IS NULL ORDER BY last_seq DESC LIMIT ?",
        (seq, limit),
    )
    return [BattleRow.of(r) for r in reversed(rows)]


@dataclass(frozen=True, slots=True)
class KillRow:
    seq: int
    killmail_id: int
    kill_time: int
    total_value: float
    pilots: list[participants.PilotRow]


async def kills(store: Store, battle_id: int) -> list[KillRow]:
    """The battle's kills, oldest first, with their pilots (the victim first)."""
    rows = await store.query(
        "SELECT k.seq, k.killmail_id, k.kill_time, k.total_value, p.pilots FROM battle_kills b"
        " JOIN kills k USING (seq) LEFT JOIN participants p USING (seq) WHERE b.battle_id = ?"
        " ORDER BY k.kill_time, k.seq",
        (battle_id,),
    )

    def build() -> list[KillRow]:
        return [KillRow(r[0], r[1], r[2], r[3], participants.unpack(r[4]) if r[4] else []) for r in rows]

    # Unpacking walks every byte in Python (~0.3 us a byte): more than a few KB (a few fleet
    # kills) is unpacked in a thread.
    return await asyncio.to_thread(build) if sum(len(r[4] or b"") for r in rows) > BIG_BLOBS else build()


async def battle_of(store: Store, killmail_id: int) -> int | None:
    """The battle a stored kill belongs to (the kill page links to it)."""
    rows = await store.query(
        "SELECT b.battle_id FROM kills k JOIN battle_kills b USING (seq) WHERE k.killmail_id = ?", (killmail_id,)
    )
    return int(rows[0][0]) if rows else None
