"""Keeping the figures right: the store's writer and pruner, the backlog after an upgrade, rebuild.

Every path goes through `share_of`, which reads what it needs from the database in the caller's
transaction (the kill's row and its participant row), so a kill stored, pruned, caught up or
rebuilt always adds or takes back exactly the same share.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

import aiosqlite

from ..kill.staticdata import StaticData
from ..storage import participants
from ..storage.figures_schema import FIGURES_BACKLOG
from ..storage.schema import INDEX_BACKLOG
from ..storage.store import NewKill, Store, TxPruner, TxWriter
from . import figures

log = logging.getLogger(__name__)

BATCH = 200  # kills a backlog transaction counts in (~20 ms of the write lock)
THREAD_PILOTS = 300  # past this many pilots in a batch (~3 ms of work), the share is worked out in a thread


async def share_of(db: aiosqlite.Connection, static: StaticData, seqs: Sequence[int], sign: int) -> figures.Share:
    """The share of the kills with these seqs that are in the participant index."""
    # One query for both: the kill's time, system and value, and its packed pilots.
    rows: list[tuple[int, int, float, bytes]] = []
    for i in range(0, len(seqs), 500):
        chunk = list(seqs[i : i + 500])
        marks = ",".join("?" * len(chunk))
        sql = (
            "SELECT k.kill_time, k.system_id, k.total_value, p.pilots FROM kills k JOIN participants p USING (seq)"
            f" WHERE k.seq IN ({marks})"
        )
        async with db.execute(sql, chunk) as cur:
            rows += [tuple(row) for row in await cur.fetchall()]

    def work() -> figures.Share:
        share = figures.Share()
        for kill_time, system_id, value, blob in rows:
            figures.add_kill(share, participants.unpack(blob), kill_time, system_id, value, static, sign)
        return share

    # A packed pilot is ~14 bytes: past THREAD_PILOTS of them, unpack and count beside the loop.
    return await asyncio.to_thread(work) if sum(len(r[3]) for r in rows) > 14 * THREAD_PILOTS else work()


async def _state(db: aiosqlite.Connection, key: str) -> int:
    async with db.execute("SELECT value FROM state WHERE key = ?", (key,)) as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def _uncounted(db: aiosqlite.Connection) -> tuple[int, int]:
    """(floor, through): indexed kills with floor < seq <= through are not in the figures yet
    (the backlog counts them in); kills at or below the floor wait for the participant index,
    whose backlog calls our writer."""
    return await _state(db, INDEX_BACKLOG), await _state(db, FIGURES_BACKLOG)


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
    async def write(db: aiosqlite.Connection, new: Sequence[tuple[int, NewKill]]) -> None:
        if not new:
            return
        # The pilots the pipeline worked out are the ones just packed into the participant rows
        # (pack/unpack round-trip exactly): no need to read and unpack them again. Kills without
        # them (tools, the participant backlog) are read back like retention reads them.
        known = [(seq, kill) for seq, kill in new if kill.participation is not None]
        unread = [seq for seq, kill in new if kill.participation is None]
        # ~0.1 ms a kill of Python (a fleet fight's thousands of pilots: tens of ms): a batch of
        # any size is worked out in a thread, so the loop keeps serving meanwhile.
        pilots = sum(
            len(kill.participation.pilots) for _, kill in known if kill.participation and PREPARED not in kill.prepared
        )
        share = await asyncio.to_thread(_shares, known, static) if pilots > THREAD_PILOTS else _shares(known, static)
        if unread:
            share.merge(await share_of(db, static, unread, 1))
        await figures.apply(db, share)

    return write


def pruner(static: StaticData) -> TxPruner:
    async def prune(db: aiosqlite.Connection, seqs: Sequence[int]) -> None:
        floor, through = await _uncounted(db)
        counted = [seq for seq in seqs if not floor < seq <= through]  # the rest were never added
        if counted:
            await figures.apply(db, await share_of(db, static, counted, -1))

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
    done = 0
    while True:
        async with store.transaction() as db:
            floor, through = await _uncounted(db)
            if through <= floor:
                await db.execute("DELETE FROM state WHERE key = ?", (FIGURES_BACKLOG,))
                return done
            async with db.execute(
                "SELECT seq FROM participants WHERE seq > ? AND seq <= ? ORDER BY seq DESC LIMIT ?",
                (floor, through, batch),
            ) as cur:
                seqs = [row[0] for row in await cur.fetchall()]
            await figures.apply(db, await share_of(db, static, seqs, 1))
            left = seqs[-1] - 1 if len(seqs) == batch else floor
            await db.execute("UPDATE state SET value = ? WHERE key = ?", (str(left), FIGURES_BACKLOG))
            done += len(seqs)


async def rebuild(store: Store, static: StaticData, batch: int = BATCH) -> int:
    """Drop the figures and count every indexed kill in again (`python app.py entities rebuild`)."""
    async with store.transaction() as db:
        await db.execute("DELETE FROM entity_months")
        await db.execute("DELETE FROM entity_tops")
        await db.execute(
            "INSERT INTO state (key, value) SELECT ?, CAST(coalesce(max(seq), 0) AS TEXT) FROM participants WHERE true"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (FIGURES_BACKLOG,),
        )
    return await catch_up(store, static, batch)
