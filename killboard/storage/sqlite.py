"""SQLite plumbing under the store: opening a database file as the server needs it (one-line
errors an operator can act on), a function run in a connection's own thread, multi-row inserts."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

# The WAL is reset after every complete checkpoint; this caps the file size it is cut back to.
JOURNAL_SIZE_LIMIT = 16 * 1024 * 1024

T = TypeVar("T")


class StoreUnusable(Exception):
    """The database cannot be opened for serving (not a database, damaged, read-only, a directory):
    the message is one line naming the file and the reason, for an operator to act on."""


def unusable(path: Path, exc: BaseException) -> StoreUnusable:
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        reason = exc.strerror + (f": {exc.filename}" if exc.filename else "")
    try:
        is_dir = path.is_dir()
    except OSError:  # a folder on the way we may not enter: the reason SQLite gave stands
        is_dir = False
    if is_dir:
        reason = "is a directory, not a database file"
    elif reason == "unable to open database file":
        # SQLite's catch-all: the file, its directory or the -wal/-shm files beside it.
        reason += f" (is {path.parent} writable, and {path.name} a regular file?)"
    elif "readonly" in reason or "read-only" in reason:
        reason += f" (the server writes {path.name} and its -wal and -shm files: make them and the folder writable)"
    elif "not a database" in reason or "malformed" in reason:
        reason += " (restore a backup, or move the file away to start empty)"
    return StoreUnusable(f"database {path}: {reason}")


def _can_open(path: Path) -> None:
    """Open and close the file with plain sqlite3: raises what aiosqlite's connect would.

    When aiosqlite's own open fails, its thread is told to stop but nobody waits for it; the
    thread then reports to an event loop that is already closed, and prints a traceback after
    our one-line error (a directory as --db did, now and then)."""
    sqlite3.connect(path).close()


async def connect(path: Path) -> aiosqlite.Connection:
    await asyncio.to_thread(_can_open, path)
    # isolation_level=None: we issue BEGIN IMMEDIATE / COMMIT ourselves, so a batch is one transaction.
    conn = await aiosqlite.connect(path, isolation_level=None)
    try:
        await _configure(conn)
    except BaseException:
        # aiosqlite runs each connection in a non-daemon thread: one left open on a failed start
        # kept the process alive after the error, neither serving nor exiting.
        await conn.close()
        raise
    return conn


async def _configure(conn: aiosqlite.Connection) -> None:
    # Before anything creates page 1 (switching to WAL does): only then does a new database get
    # incremental auto-vacuum without a VACUUM. On an existing database it is a no-op until VACUUM.
    await conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
    # synchronous and busy_timeout are per connection. WAL + NORMAL: a process crash loses nothing
    # committed; only a power loss may roll back the last commits.
    await conn.execute("PRAGMA journal_mode=WAL")
    await conn.execute("PRAGMA synchronous=NORMAL")
    await conn.execute("PRAGMA busy_timeout=5000")
    await conn.execute("PRAGMA foreign_keys=ON")
    await conn.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")


# Parameters a statement of insert_many holds at most: SQLite's default limit since 3.32 (the
# connection's own limit when lower, 999 on older builds).
MAX_PARAMETERS = 32_766
# The rows a statement of insert_many holds: one of these few shapes, so that each statement is
# prepared once and then found in the connection's statement cache (128 statements). A shape for
# every row count (a kill's figures are 8-60 rows; a batch's remainder anything up to thousands)
# missed that cache: preparing a 30-row upsert cost as much as running it, a 1,000-row one ~10x
# as much. A cached 256-row upsert holds ~0.2 MB.
SHAPES = (256, 64, 16, 4, 1)
_VALUES = re.compile(r"VALUES (\(\?(?:, \?)*\))")


def insert_many(db: sqlite3.Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    """`db.executemany(sql, rows)` for an INSERT (an upsert too) of one `VALUES (?, …)` row,
    sent as statements of many rows each (SHAPES): the same rows, in the same order.

    executemany steps SQLite once a row, and each step lets go of the GIL: with the event loop
    busy (preparing the next batch, parsing POSTs) the thread then waited to get it back, and
    the figures' ~9,500 upserts a batch took twice as long as in an import (issue 21). In
    statements of 256 rows they are ~40 steps."""
    match = _VALUES.search(sql)
    if match is None:
        raise ValueError(f"not an INSERT of one VALUES row: {sql[:80]!r}")
    group = match.group(1)
    limit = parameter_limit(db)
    width = group.count("?")
    head, tail = sql[: match.start(1)], sql[match.end(1) :]
    start = 0
    for shape in SHAPES:
        if shape > 1 and shape * width > limit:
            continue
        whole = start + (len(rows) - start) // shape * shape
        if whole == start:
            continue
        if shape == 1:
            db.executemany(sql, rows[start:whole])
        else:
            params = [[v for row in rows[i : i + shape] for v in row] for i in range(start, whole, shape)]
            db.executemany(head + ",".join([group] * shape) + tail, params)
        start = whole


def chunks(items: list[int], size: int) -> Iterable[list[int]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def existing(db: sqlite3.Connection, table: str, ids: list[int]) -> set[int]:
    found: set[int] = set()
    for chunk in chunks(list(set(ids)), 900):
        marks = ",".join("?" * len(chunk))
        found.update(r[0] for r in db.execute(f"SELECT killmail_id FROM {table} WHERE killmail_id IN ({marks})", chunk))
    return found


def parameter_limit(db: sqlite3.Connection) -> int:
    """The parameters one statement of `db` may hold (MAX_PARAMETERS at most)."""
    return min(MAX_PARAMETERS, db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))


def pairs_in(db: sqlite3.Connection, select: str, ids: list[int], size: int = 900) -> dict[int, Any]:
    """The (key, value) rows of `select`, whose `IN ({})` is filled with `ids` `size` at a time
    (900: under the oldest builds' limit of 999 parameters), as a dict."""
    out: dict[int, Any] = {}
    for chunk in chunks(ids, size):
        out.update(db.execute(select.format(",".join("?" * len(chunk))), chunk).fetchall())
    return out


def seqs_of(db: sqlite3.Connection, ids: list[int]) -> dict[int, int]:
    return pairs_in(db, "SELECT killmail_id, seq FROM kills WHERE killmail_id IN ({})", ids)


def in_thread(conn: aiosqlite.Connection, fn: Callable[[sqlite3.Connection], T]) -> Awaitable[T]:
    """Run `fn` on the plain sqlite3 connection under `conn`, in `conn`'s own thread: one hop,
    however many statements `fn` runs (the store's write transactions, issue 21).

    aiosqlite 0.22 has no public call for this. Its worker thread takes (future, function)
    pairs from a queue and sets the future from the result; `Connection._execute(fn, *args)`
    queues one and `Connection._conn` is the sqlite3 connection (usable only in that thread:
    check_same_thread). Both are private, so they are used here and nowhere else, and
    tests/storage/test_sqlite.py fails if either changes. The other ways were worse: a second
    thread on the same connection (check_same_thread=False) would share it between two threads
    outside aiosqlite's queue; a write connection of our own would drop aiosqlite from the
    write path the design keeps it on."""

    def run() -> T:
        return fn(conn._conn)

    return conn._execute(run)
