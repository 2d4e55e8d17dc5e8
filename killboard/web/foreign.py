"""Writes by another process on this database reach this server's caches of rendered pages.

An import beside the server (`app.py import`), `app.py battles rebuild`, or a second server on
the same file may save names, rewrite kills or battles, or prune: none of it calls this
process's `Store.on_changed`/`on_named`. SQLite's `PRAGMA data_version` on the store's write
connection moves only when another connection commits (Store.foreign_version), so a poll every
`CHECK_SECONDS` (one thread hop, ~70 us) tells, and the caches start over: the view cache
(every row and page) and the battles' summaries. Kills another process stores already move the
last seq every page depends on; this is for what they change beside the kills.

Before that hop, a glance: `PRAGMA data_version` on a connection of the event loop's own that
never writes, so it moves on every commit, this process's too (~10 us on the loop, no thread
woken). Only when it moved does the exact check hop to the writer's thread. An idle server no
longer wakes that thread four times a second: from idle, each hop cost ~0.35 ms of CPU (the
threads' wake-ups) against ~18 us back to back. The poll's own wake-ups of the loop (~2 CPU-ms a
second on this machine) are what is left of an idle server's CPU.
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
    exact: int = 0  # how many polls asked the writer's connection (a glance saw a commit)
    _seen: int | None = None
    _glance: sqlite3.Connection | None = None
    _glanced: int | None = None

    def open(self) -> None:
        """The glancing connection (the loop's own; closed by `close`). Without it, every
        check is exact."""
        # isolation_level None: no implicit transaction; busy_timeout 0: a glance never waits
        # (busy means "look exactly").
        self._glance = sqlite3.connect(self.store.path, isolation_level=None)
        self._glance.execute("PRAGMA busy_timeout=0")

    def close(self) -> None:
        if self._glance is not None:
            self._glance.close()
            self._glance = None

    def _committed(self) -> bool:
        """Whether any connection, this process's writer included, committed since the last
        glance (True when it cannot tell)."""
        if self._glance is None:
            return True
        try:
            version = int(self._glance.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error:
            return True
        moved = version != self._glanced
        self._glanced = version
        return moved

    async def check(self) -> bool:
        """True, and the listeners told, when another process committed since the last check."""
        if not self._committed() and self._seen is not None:
            return False
        self.exact += 1
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
