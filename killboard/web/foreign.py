"""Writes by another process on this database reach this server's caches of rendered pages.

An import beside the server (`app.py import`), `app.py battles rebuild`, or a second server on
the same file may save names, rewrite kills or battles, or prune: none of it calls this
process's `Store.on_changed`/`on_named`. SQLite's `PRAGMA data_version` on the store's write
connection moves only when another connection commits (Store.foreign_version), so a poll every
`CHECK_SECONDS` (one thread hop, ~70 us) tells, and the caches start over: the view cache
(every row and page) and the battles' summaries. Kills another process stores already move the
last seq every page depends on; this is for what they change beside the kills.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field

from ..storage.store import Store

log = logging.getLogger(__name__)

# A write by another process shows here within this (nginx keeps a page for a second anyway).
CHECK_SECONDS = 0.25


@dataclass
class ForeignWrites:
    """Polls the database for commits by other processes and tells `listeners` of each."""

    store: Store
    listeners: list[Callable[[], None]] = field(default_factory=list)
    noticed: int = 0  # how many polls found another process's commits
    _seen: int | None = None

    async def check(self) -> bool:
        """True, and the listeners told, when another process committed since the last check."""
        version = await self.store.foreign_version()
        changed = self._seen is not None and version != self._seen
        self._seen = version
        if changed:
            self.noticed += 1
            for listener in self.listeners:
                listener()
        return changed

    async def run(self, every: float = CHECK_SECONDS) -> None:
        failing = False  # said once, not four times a second
        while True:
            try:
                await self.check()
                failing = False
            except (sqlite3.Error, ValueError) as exc:  # ValueError: aiosqlite's closed connection
                if not failing:
                    log.warning("could not poll the database for other processes' writes (%s)", exc)
                failing = True
            await asyncio.sleep(every)
