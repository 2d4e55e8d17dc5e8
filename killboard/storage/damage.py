"""A database damaged after start (bad pages mid-file): found by a check at start or by a read
that hits it, reported by /health as `degraded`, and answered 503 with a JSON message, never 500."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import ujson
from aiohttp import web

log = logging.getLogger(__name__)

# SQLite's result codes for a file that is not (or no longer) a sound database.
DAMAGE_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


@dataclass(slots=True)
class Damage:
    """What is known to be wrong with the database file; None while nothing is."""

    problem: str | None = None

    def note(self, exc: sqlite3.Error) -> bool:
        """Record `exc` if it says the file is damaged (logged once); True if it did."""
        if getattr(exc, "sqlite_errorcode", None) not in DAMAGE_CODES:
            return False
        if self.problem is None:
            log.error("the database is damaged (%s): reads that reach the damage answer 503; restore a backup", exc)
        self.problem = str(exc)
        return True


def quick_check(conn: sqlite3.Connection) -> str | None:
    """SQLite's `PRAGMA quick_check`: None when the file is sound, else the first problem.
    Reads the whole file once (seconds for gigabytes): run in a thread."""
    try:
        row = conn.execute("PRAGMA quick_check(1)").fetchone()
    except sqlite3.DatabaseError as exc:
        if "interrupted" in str(exc):
            raise
        return str(exc)
    result = str(row[0]) if row else "no result"
    return None if result == "ok" else result


def check_ctx(damage: Damage, path: Path) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup_ctx that checks the file in the background once the database is open, on a
    read-only connection of its own (the server's reads never wait for it)."""

    # as_uri: a path with "?", "#" or "%" in it stays one path in the URI.
    uri = path.absolute().as_uri() + "?mode=ro"

    async def run(app: web.Application) -> AsyncIterator[None]:
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False)

        async def check() -> None:
            try:
                problem = await asyncio.to_thread(quick_check, conn)
            except sqlite3.Error as exc:
                if "interrupted" not in str(exc):  # interrupted: the server is stopping
                    log.warning("database check could not run: %s", exc)
                return
            if problem is not None and damage.problem is None:
                log.error("database check at start: %s; reads that reach the damage answer 503", problem)
                damage.problem = problem

        task = asyncio.create_task(check(), name="killboard-db-check")
        yield
        # A stop must not wait for a check of a big file: interrupt() ends the pragma at once.
        conn.interrupt()
        with suppress(asyncio.CancelledError):
            await task
        conn.close()

    return run


def middleware(damage: Damage) -> Callable[..., Awaitable[web.StreamResponse]]:
    """503 with a JSON body for a request the database could not answer (damaged file, I/O error)."""

    @web.middleware
    async def database_errors(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except sqlite3.DatabaseError as exc:
            damaged = damage.note(exc)
            if not damaged:
                log.warning("%s %s: database error: %s; answered 503", request.method, request.path, exc)
            reason = "the database is damaged; the operator must restore a backup" if damaged else str(exc)
            body = {"error": f"database unavailable: {reason}", "status": "degraded"}
            return web.Response(
                status=503,
                body=ujson.dumps(body).encode(),
                content_type="application/json",
                headers={"Retry-After": "60"},
            )

    return database_errors
