"""A function run in aiosqlite's own thread (sqlite.in_thread), and write transactions that need
no event loop between their statements (Store.transact)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from killgen import make_kills

from killboard.kill.staticdata import StaticData
from killboard.storage.rows import InboxRow
from killboard.storage.sqlite import connect, in_thread
from killboard.storage.store import Store


async def test_in_thread_runs_on_the_connection_in_its_own_thread(tmp_path: Path) -> None:
    """in_thread uses aiosqlite's private Connection._execute and ._conn: this fails if a new
    aiosqlite changes either (then in_thread must change with it)."""
    conn = await connect(tmp_path / "kb.sqlite3")
    try:
        # The thread aiosqlite runs statements in, found through public calls only.
        await conn.create_function("thread_id", 0, threading.get_ident)
        worker = next(iter(await conn.execute_fetchall("SELECT thread_id()")))[0]
        await conn.execute("CREATE TEMP TABLE t (x INTEGER)")  # per connection: seen only on the same one
        await conn.execute("INSERT INTO t VALUES (7)")

        def fn(db: sqlite3.Connection) -> tuple[Any, int, int]:
            return type(db), threading.get_ident(), db.execute("SELECT x FROM t").fetchone()[0]

        kind, ran_in, seen = await in_thread(conn, fn)
        assert (kind, ran_in, seen) == (sqlite3.Connection, worker, 7)
        assert worker != threading.get_ident()

        def fails(db: sqlite3.Connection) -> None:
            db.execute("SELECT * FROM no_such_table")

        with pytest.raises(sqlite3.OperationalError, match="no_such_table"):
            await in_thread(conn, fails)
        assert await in_thread(conn, lambda db: db.total_changes) == conn.total_changes  # still usable
    finally:
        await conn.close()


def blocked_until(check: Any, timeout: float = 10) -> bool:
    """Block the event loop (time.sleep, never await) until `check()` holds; whether it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return False


async def test_a_batch_and_an_inbox_write_commit_while_the_event_loop_is_blocked(
    tmp_path: Path, static: StaticData, killmails: list[dict[str, Any]]
) -> None:
    """Each transaction is one call in the database thread: once started, it commits without
    the event loop (as ~15 awaits a batch, every statement waited for a loop busy with POSTs
    and the next batch's preparation)."""
    path = tmp_path / "kb.sqlite3"
    store = await Store.open(path)
    watcher = sqlite3.connect(path)  # another connection: sees only what was committed
    try:

        def count(table: str) -> int:
            return int(watcher.execute(f"SELECT count(*) FROM {table}").fetchone()[0])

        kills = make_kills(static, killmails, 200, 500_000_000, 1_700_000_000)
        inbox = [InboxRow(k.killmail_id, b"{}", "http", True) for k in kills]
        adding = asyncio.create_task(store.add_to_inbox(inbox))
        await asyncio.sleep(0)  # the task runs up to its one hop
        assert blocked_until(lambda: count("inbox") == 200)
        assert (await adding)[0] == [k.killmail_id for k in kills]

        saving = asyncio.create_task(store.save_kills(kills, done=[k.killmail_id for k in kills]))
        await asyncio.sleep(0)
        assert blocked_until(lambda: count("kills") == 200 and count("inbox") == 0)
        assert count("participants") == 200
        assert [seq for seq, _ in await saving] == list(range(1, 201))
    finally:
        watcher.close()
        await store.close()


async def test_a_transaction_that_raises_leaves_nothing(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "kb.sqlite3")
    try:

        def half(db: sqlite3.Connection) -> None:
            db.execute("INSERT INTO state (key, value) VALUES ('half', 'done')")
            raise OSError("disk full (a test)")

        with pytest.raises(OSError, match="disk full"):
            await store.transact(half)
        assert await store.get_state("half") is None
        await store.set_state({"whole": "done"})  # the connection is out of the transaction again
        assert await store.get_state("whole") == "done"
    finally:
        await store.close()
