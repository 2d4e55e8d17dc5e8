"""Background upkeep of the database: retention, giving freed space back, keeping the WAL small.

Every step is a short write transaction through the Store's lock, with a pause between steps,
so the worker's batch commits slot in between and ingest never waits long.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from dataclasses import dataclass

from ..metrics import Metrics
from .damage import Damage
from .store import Store

log = logging.getLogger(__name__)

DAY = 86_400


@dataclass(frozen=True, slots=True)
class Upkeep:
    """What one pass did."""

    pruned: int
    pages_freed: int
    wal_frames_left: int


async def run_pass(
    store: Store,
    retention_days: int,
    batch: int = 500,
    vacuum_pages: int = 1024,
    pause: float = 0.02,
    now: float | None = None,
) -> Upkeep:
    """Prune kills past retention (in batches), vacuum the freed pages, checkpoint the WAL."""
    pruned = 0
    if retention_days > 0:
        cutoff = int((time.time() if now is None else now) - retention_days * DAY)
        while removed := await store.prune(cutoff, batch):
            pruned += removed
            await asyncio.sleep(pause)  # the worker's commits get the lock between batches
        if pruned:
            log.info(
                "retention: pruned %d kills with kill time before %s (keeping %d days)",
                pruned,
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(cutoff)),
                retention_days,
            )
    freed = 0
    free = await store.free_pages()
    while free > 0:
        await store.incremental_vacuum(vacuum_pages)
        left = await store.free_pages()
        freed += free - left
        if left >= free:
            break
        free = left
        await asyncio.sleep(pause)
    if freed:
        log.info("vacuum: gave %d free pages back to the file system", freed)
    busy, frames, done = await store.checkpoint()
    return Upkeep(pruned, freed, frames - done if busy else 0)


async def maintain(
    store: Store,
    retention_days: int,
    interval: float,
    batch: int,
    vacuum_pages: int,
    metrics: Metrics | None = None,
    damage: Damage | None = None,
) -> None:
    """Run a pass every `interval` seconds, for as long as the server runs."""
    while True:
        try:
            done = await run_pass(store, retention_days, batch, vacuum_pages)
            if metrics is not None:
                metrics.kills_pruned.inc(done.pruned)
        except sqlite3.OperationalError as exc:
            # Disk full, a lock held too long by another process: expected on a small VPS; retry later.
            log.warning("database upkeep skipped this time: %s", exc)
        except sqlite3.DatabaseError as exc:
            if damage is None or not damage.note(exc):  # damage: /health says so, logged once
                log.exception("database upkeep failed; retrying in %.0f s", interval)
        except Exception:
            log.exception("database upkeep failed; retrying in %.0f s", interval)
        await asyncio.sleep(interval)
