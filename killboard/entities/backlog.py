"""Keeping the figures right: the store's writer and pruner, the backlogs after an upgrade
(kills not counted yet; kills indexed by an older enrichment), rebuild.

Every path goes through `share_of` (or the share the pipeline worked out from the same pilots),
which reads what it needs from the database in the caller's transaction (the kill's row and its
participant row), so a kill stored, pruned, caught up or rebuilt always adds or takes back
exactly the same share. All of it runs in the database thread, inside the one call that runs
the transaction (Store.transact).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from functools import partial

from ..kill.enrich import HULL_CATEGORIES
from ..kill.staticdata import StaticData
from ..storage import participants
from ..storage.figures_schema import FIGURES_BACKLOG
from ..storage.rows import NewKill
from ..storage.schema import INDEX_BACKLOG, REINDEX_THROUGH
from ..storage.store import Store, TxPruner, TxWriter
from . import figures

log = logging.getLogger(__name__)

BATCH = 200  # kills a backlog transaction counts in (~20 ms of the write lock)


def share_of(db: sqlite3.Connection, static: StaticData, seqs: Sequence[int], sign: int) -> figures.Share:
    """The share of the kills with these seqs that are in the participant index (in the
    database thread: unpacking and counting a fleet fight's pilots keeps no loop waiting)."""
    share = figures.Share()
    # One query for both: the kill's time, system and value, and its packed pilots.
    for i in range(0, len(seqs), 500):
        chunk = list(seqs[i : i + 500])
        marks = ",".join("?" * len(chunk))
        sql = (
            "SELECT k.kill_time, k.system_id, k.total_value, p.pilots FROM kills k JOIN participants p USING (seq)"
            f" WHERE k.seq IN ({marks})"
        )
        for kill_time, system_id, value, blob in db.execute(sql, chunk).fetchall():
            figures.add_kill(share, participants.unpack(blob), kill_time, system_id, value, static, sign)
    return share


def _state(db: sqlite3.Connection, key: str) -> int:
    row = db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
    return int(row[0]) if row else 0


def _uncounted(db: sqlite3.Connection) -> tuple[int, int]:
    """(floor, through): indexed kills with floor < seq <= through are not in the figures yet
    (the backlog counts them in); kills at or below the floor wait for the participant index,
    whose backlog calls our writer."""
    return _state(db, INDEX_BACKLOG), _state(db, FIGURES_BACKLOG)


PREPARED = "entities.share"  # the key of a kill's share in NewKill.prepared


def preparer(static: StaticData) -> Callable[[NewKill], None]:
    """Work a new kill's share out while the pipeline prepares it: the write only adds it up."""

    def prepare(kill: NewKill) -> None:
        if kill.participation is not None:
            pilots = kill.participation.pilots
            kill.prepared[PREPARED] = figures.kill_share(
                pilots, kill.kill_time, kill.system_id, kill.total_value, static
            )

    return prepare


def _shares(kills: Sequence[tuple[int, NewKill]], static: StaticData) -> figures.Share:
    share = figures.Share()
    for _, kill in kills:
        prepared = kill.prepared.get(PREPARED)
        if prepared is not None:
            figures.add_share(share, prepared)
        elif kill.participation is not None:
            figures.add_kill(share, kill.participation.pilots, kill.kill_time, kill.system_id, kill.total_value, static)
    return share


def writer(static: StaticData) -> TxWriter:
    def write(db: sqlite3.Connection, new: Sequence[tuple[int, NewKill]]) -> None:
        if not new:
            return
        # The pilots the pipeline worked out are the ones just packed into the participant rows
        # (pack/unpack round-trip exactly): no need to read and unpack them again. Kills without
        # them (tools, the participant backlog) are read back like retention reads them.
        known = [(seq, kill) for seq, kill in new if kill.participation is not None]
        unread = [seq for seq, kill in new if kill.participation is None]
        share = _shares(known, static)
        if unread:
            share.merge(share_of(db, static, unread, 1))
        figures.apply(db, share)

    return write


def pruner(static: StaticData) -> TxPruner:
    def prune(db: sqlite3.Connection, seqs: Sequence[int]) -> None:
        floor, through = _uncounted(db)
        counted = [seq for seq in seqs if not floor < seq <= through]  # the rest were never added
        if counted:
            figures.apply(db, share_of(db, static, counted, -1))

    return prune


def attach(store: Store, static: StaticData) -> None:
    """Keep the figures in every transaction that stores or prunes kills on `store`."""
    store.writers.append(writer(static))
    store.pruners.append(pruner(static))
    store.preparers.append(preparer(static))


async def with_figures(store: Store, static: StaticData) -> Callable[[], Awaitable[None]]:
    """For an import (importer.Prepare): kills it stores count into the figures in their own
    transaction, as the server's do; nothing to stop afterwards."""
    attach(store, static)

    async def done() -> None:
        return None

    return done


async def catch_up(store: Store, static: StaticData, batch: int = BATCH) -> int:
    """Count in the indexed kills the figures do not hold yet (after the upgrade that added them,
    or a rebuild), newest first, a batch a transaction; returns how many. Safe beside the server."""

    def step(db: sqlite3.Connection) -> int | None:
        """Count one batch in; None when nothing is left."""
        floor, through = _uncounted(db)
        if through <= floor:
            db.execute("DELETE FROM state WHERE key = ?", (FIGURES_BACKLOG,))
            return None
        seqs = [
            row[0]
            for row in db.execute(
                "SELECT seq FROM participants WHERE seq > ? AND seq <= ? ORDER BY seq DESC LIMIT ?",
                (floor, through, batch),
            )
        ]
        figures.apply(db, share_of(db, static, seqs, 1))
        left = seqs[-1] - 1 if len(seqs) == batch else floor
        db.execute("UPDATE state SET value = ? WHERE key = ?", (str(left), FIGURES_BACKLOG))
        return len(seqs)

    done = 0
    while (counted := await store.transact(step)) is not None:
        done += counted
    return done


async def rebuild(store: Store, static: StaticData, batch: int = BATCH) -> int:
    """Drop the figures and count every indexed kill in again (`python app.py entities rebuild`)."""

    def drop(db: sqlite3.Connection) -> None:
        db.execute("DELETE FROM entity_months")
        db.execute("DELETE FROM entity_tops")
        db.execute(
            "INSERT INTO state (key, value) SELECT ?, CAST(coalesce(max(seq), 0) AS TEXT) FROM participants WHERE true"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (FIGURES_BACKLOG,),
        )

    await store.transact(drop)
    return await catch_up(store, static, batch)


def no_hulls(pilots: Sequence[participants.PilotRow], static: StaticData) -> tuple[participants.EntityRow, ...]:
    """The ship and group entities of these pilot rows whose ship is no hull (a gun, a drone …)
    or a type the static data does not know: what an older enrichment may have indexed wrongly
    (or ESI named so itself)."""
    out: list[participants.EntityRow] = []
    for pilot in pilots:
        ship = pilot[4]
        info = static.types.get(ship) if ship else None
        if ship and (info is None or info.category_id not in HULL_CATEGORIES):
            out.append((participants.Kind.SHIP, ship, 0))
            if info is not None:
                out.append((participants.Kind.GROUP, info.group_id, 0))
    return tuple(out)


async def reindex(store: Store, static: StaticData, batch: int = BATCH) -> int:
    """Index again, from their stored documents, the kills indexed while enrichment put an
    attacker's weapon in as their ship when ESI gave none (a "250mm Railgun II" among the ships
    flown), up to the seq migration 9 noted, newest first. In one transaction a batch: each such
    kill's figures are taken back, its rows replaced by what enrichment makes of it now, and
    its figures counted in again; every other kill is only read. Returns how many were indexed
    again. Safe beside the server: kept pages are told through `Store.changed`."""
    done = 0
    while (through := store.reindex_through) > 0:  # loaded at open: no read at all when nothing waits
        rows = await store.query(
            "SELECT seq, pilots FROM participants WHERE seq <= ? ORDER BY seq DESC LIMIT ?", (through, batch)
        )
        left = rows[-1][0] - 1 if len(rows) == batch else 0
        stale = await asyncio.to_thread(_stale, rows, static)
        fresh = await store.indexed_again(list(stale)) if stale else []
        # Only those enrichment now sees otherwise: ESI itself names some types that are no hull
        # as a ship (a fighter's Standup Heavy Guided Bomb), and those rows are right as they are.
        fresh = [f for f in fresh if list(f[2].pilots) != participants.unpack(stale[f[0]][0])]
        ids = await store.transact(partial(_index_again, static=static, stale=stale, fresh=fresh, left=left))
        store.reindex_through = left
        if ids:
            store.changed(ids)
            done += len(ids)
    return done


# seq -> (the pilots' row as read, the entities it indexed that enrichment no longer makes)
Stale = dict[int, tuple[bytes, tuple[participants.EntityRow, ...]]]


def _stale(rows: Sequence[tuple[int, bytes]], static: StaticData) -> Stale:
    return {seq: (blob, found) for seq, blob in rows if (found := no_hulls(participants.unpack(blob), static))}


def _index_again(
    db: sqlite3.Connection,
    static: StaticData,
    stale: Stale,
    fresh: Sequence[tuple[int, int, participants.Participation]],
    left: int,
) -> list[int]:
    """One batch of `reindex`, in its transaction; returns the killmail ids indexed again."""
    again: list[tuple[int, participants.Participation]] = []
    ids: list[int] = []
    if fresh:
        marks = ",".join("?" * len(fresh))
        now = dict(db.execute(f"SELECT seq, pilots FROM participants WHERE seq IN ({marks})", [f[0] for f in fresh]))
        for seq, killmail_id, part in fresh:
            if now.get(seq) == stale[seq][0]:  # else pruned, or indexed again by another process
                again.append((seq, part))
                ids.append(killmail_id)
    floor, through = _uncounted(db)
    counted = [seq for seq, _ in again if not floor < seq <= through]
    if counted:
        figures.apply(db, share_of(db, static, counted, -1))
    # What each kill indexed then: its entities now, and the ships and groups it no longer names.
    old = [(seq, participants.Participation(part.pilots, part.entities + stale[seq][1])) for seq, part in again]
    participants.unindex(db, old)
    participants.index(db, again)
    if counted:
        figures.apply(db, share_of(db, static, counted, 1))
    if left:
        db.execute("UPDATE state SET value = ? WHERE key = ?", (str(left), REINDEX_THROUGH))
    else:
        db.execute("DELETE FROM state WHERE key = ?", (REINDEX_THROUGH,))
    return ids
