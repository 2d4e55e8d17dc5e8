"""What other processes stored (an import, a second server) folded into this process's detector,
from the database as it is now, without writing anything: their kills, loose or in battles."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..storage import participants
from .detect import GAP, HORIZON, Detector
from .tables import _COLUMNS, BattleRow, _battle, point

CHUNK = 500  # ids per IN (...) statement
BREATHE = 32  # kills unpacked between two releases of the GIL (a server's event loop waits)


@dataclass
class Caught:
    """What one fold read and changed in memory (the live channels are told after the commit)."""

    last: int  # the highest seq read: the detector's new watermark
    count: int = 0
    touched: set[int] = field(default_factory=set)  # battles another process changed
    merged: list[tuple[int, int]] = field(default_factory=list)  # (gone, kept)


def fold(
    db: sqlite3.Connection,
    detector: Detector,
    static: Any,
    after: int,
    before: int | None = None,
    limit: int | None = None,
    breathe: Callable[[], None] | None = None,
) -> Caught:
    """The kills with `after` < seq (< `before`), `limit` at most, in seq order, into `detector`.

    Read inside a transaction, so the battles are read as every commit so far left them: a
    kill another process put in a battle loads that battle's row (its entities are the kills'
    own, added to what memory knew); a loose one joins the pool; loose kills in memory that
    the other process put in a battle since leave the pool; battles it merged away go."""
    sql = (
        "SELECT k.seq, k.kill_time, k.system_id, k.total_value, p.pilots, b.battle_id FROM kills k"
        " LEFT JOIN participants p USING (seq) LEFT JOIN battle_kills b USING (seq) WHERE k.seq > ?"
    )
    args: list[int] = [after]
    if before is not None:
        sql += " AND k.seq < ?"
        args.append(before)
    sql += " ORDER BY k.seq"
    if limit is not None:
        sql += " LIMIT ?"
        args.append(limit)
    rows = db.execute(sql, args).fetchall()
    caught = Caught(rows[-1][0] if rows else after, len(rows))
    if not rows:
        return caught
    detector.newest = max(detector.newest, max(r[1] for r in rows))
    since = detector.newest - HORIZON - GAP  # what tables.load would read
    entities: dict[int, set[int]] = {}
    for i, (seq, t, system, value, blob, battle_id) in enumerate(rows):
        if breathe is not None and i % BREATHE == BREATHE - 1:
            breathe()
        if t < since:
            continue  # past memory's horizon: a late kill there reads the database (tables.hydrate)
        p = point(seq, t, system, value, participants.unpack(blob) if blob else (), static)
        if battle_id is None:
            detector.load_pooled(p)
        else:
            entities.setdefault(int(battle_id), set()).update(p.entities)
    ids = sorted(entities)
    constellations: set[int] = set()
    for i in range(0, len(ids), CHUNK):
        chunk = ids[i : i + CHUNK]
        marks = ",".join("?" * len(chunk))
        for row in db.execute(f"SELECT {_COLUMNS} FROM battles WHERE battle_id IN ({marks})", chunk):
            b = _battle(BattleRow.of(row))
            if row[1] is not None or b.end < since:
                continue  # battle_kills names the battles kills are in now: never a merged one
            known = detector.battles.get(b.battle_id)
            b.entities = (known.entities if known is not None else set()) | entities[b.battle_id]
            detector.load_battle(b)
            caught.touched.add(b.battle_id)
            constellations.add(b.constellation)
            # Kills memory held loose that the other process put in this battle.
            loose = detector.pooled(b.systems, b.start, b.end)
            for j in range(0, len(loose), CHUNK):
                part = loose[j : j + CHUNK]
                marks = ",".join("?" * len(part))
                taken = [r[0] for r in db.execute(f"SELECT seq FROM battle_kills WHERE seq IN ({marks})", part)]
                if taken:
                    detector.unpool(b.systems, taken)
    # A battle grows into another only in its constellation: those battles in memory may be gone.
    near = sorted({b for c in constellations for b in detector.near(c)} - caught.touched)
    for i in range(0, len(near), CHUNK):
        chunk = near[i : i + CHUNK]
        marks = ",".join("?" * len(chunk))
        for gone, kept in db.execute(
            f"SELECT battle_id, merged_into FROM battles WHERE battle_id IN ({marks}) AND merged_into IS NOT NULL",
            chunk,
        ).fetchall():
            detector.unload(gone)
            caught.merged.append((int(gone), int(kept)))
    detector.trim()
    return caught
