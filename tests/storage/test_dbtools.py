"""`app.py backup` while the real server ingests, and `app.py check` on good and damaged files."""

from __future__ import annotations

import asyncio
import copy
import fcntl
import os
import pty
import select
import sqlite3
import struct
import subprocess
import sys
import termios
from contextlib import closing
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from killgen import filled
from serverproc import ServerProcess, import_real_kills

from killboard.config import PROJECT_ROOT
from killboard.kill import codec
from killboard.kill.prices import price_book
from killboard.kill.staticdata import StaticData
from killboard.storage.schema import MIGRATIONS
from killboard.storage.store import Store

TOKEN = "backup-token"


def app_py(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "app.py", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout
    )


def listing(folder: Path, pattern: str) -> list[Path]:
    return sorted(folder.glob(pattern))


async def run_app_py(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(app_py, *args)


async def test_backup_while_the_server_ingests(
    tmp_path: Path, static: StaticData, killmails: list[dict[str, Any]]
) -> None:
    db = tmp_path / "kb.sqlite3"
    await filled(db, static, killmails, 4000)  # ~3 MB: a backup of many 64-page steps
    server = ServerProcess(db, env={"KILLBOARD_INGEST_TOKEN": TOKEN})
    posted = 0
    stop = asyncio.Event()

    async def ingest() -> None:
        nonlocal posted
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:
            n = 0
            while not stop.is_set():
                batch = []
                for km in killmails[:10]:
                    km = copy.deepcopy(km)
                    km["killmail_id"] = 800_000_000 + n
                    n += 1
                    batch.append(km)
                async with session.post(server.url + "/api/killmails", json=batch) as resp:
                    assert resp.status == 202
                    posted += len((await resp.json())["accepted"])
                await asyncio.sleep(0.01)

    try:
        await server.start()
        feeder = asyncio.create_task(ingest())
        await asyncio.sleep(0.3)
        posted_before = posted
        done = await run_app_py("--db", str(db), "backup", str(tmp_path), "--pages", "64")
        posted_during = posted - posted_before
        await asyncio.sleep(0.2)
        stop.set()
        await feeder
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr
    # Not on a terminal: no progress bar, only the line that says what was written.
    assert done.stdout.splitlines() == [done.stdout.strip()] and done.stdout.startswith("backup: wrote "), done.stdout
    assert "%" not in done.stderr
    assert posted_during > 0  # the server kept taking kills while the copy ran
    copies = listing(tmp_path, "killboard-*.sqlite3")
    assert len(copies) == 1 and not listing(tmp_path, "*.partial")

    checked = await run_app_py("--db", str(copies[0]), "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "ok" in checked.stdout.splitlines()[-1]
    store = await Store.open(copies[0], render=codec.renderer(static, price_book(static)))
    try:
        count = await store.count()
        assert 4000 <= count <= 4000 + posted
        latest = await store.latest(5)
        assert len(latest) == 5  # the copy is a working database, kills render from it
    finally:
        await store.close()


async def test_check_reports_a_healthy_database(
    tmp_path: Path, static: StaticData, killmails: list[dict[str, Any]]
) -> None:
    db = tmp_path / "kb.sqlite3"
    await filled(db, static, killmails, 300)
    done = await run_app_py("check", "--db", str(db))
    assert done.returncode == 0, done.stdout
    assert "kills 300, inbox 0" in done.stdout
    assert f"schema version {len(MIGRATIONS)} (current)" in done.stdout
    assert "all 300 kill bodies decode" in done.stdout


async def test_check_finds_a_damaged_file(tmp_path: Path, static: StaticData, killmails: list[dict[str, Any]]) -> None:
    db = tmp_path / "kb.sqlite3"
    await filled(db, static, killmails, 2000)
    with db.open("r+b") as f:  # scribble over pages in the middle of the kills table
        size = f.seek(0, 2)
        f.seek(size // 2 // 4096 * 4096)
        f.write(b"\xa5" * 4096 * 3)
    done = await run_app_py("check", "--db", str(db))
    assert done.returncode == 1
    assert "DAMAGE" in done.stdout and done.stdout.splitlines()[-1].endswith("DAMAGED")
    assert "Traceback" not in done.stderr


async def test_check_on_something_that_is_not_a_database(tmp_path: Path) -> None:
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"this is not an SQLite file" * 200)
    done = await run_app_py("check", "--db", str(junk))
    assert done.returncode == 1
    assert "file is not a database" in done.stdout
    assert "Traceback" not in done.stderr
    missing = await run_app_py("check", "--db", str(tmp_path / "nowhere.sqlite3"))
    assert missing.returncode == 2 and "no database at" in missing.stderr


@pytest.mark.parametrize("command", [["battles", "rebuild"], ["entities", "rebuild"], ["webhooks", "test", "ops"]])
def test_maintenance_on_a_mistyped_db_makes_no_empty_database(tmp_path: Path, command: list[str]) -> None:
    """They reported success on an empty database they had just made at the mistyped path."""
    hooks = tmp_path / "webhooks.toml"
    hooks.write_text('[[webhook]]\nname = "ops"\nurl = "https://discord.com/api/webhooks/1/x"\nchannel = "kills"\n')
    nowhere = tmp_path / "nowhere.sqlite3"
    file = ["--file", str(hooks)] if command[0] == "webhooks" else []
    done = app_py(*command, "--db", str(nowhere), *file)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == f"{' '.join(command[:2])}: no database at {nowhere}"
    assert list(tmp_path.iterdir()) == [hooks]


def test_backup_draws_a_bar_on_a_terminal(tmp_path: Path) -> None:
    """In a real pseudo-terminal: tqdm's bar counts the pages to 100%, then the final line."""
    db = import_real_kills(tmp_path / "kb.sqlite3")
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a 0x0 pty gets an empty bar
    try:
        done = subprocess.run(
            [sys.executable, "app.py", "--db", str(db), "backup", str(tmp_path / "copy.sqlite3"), "--pages", "16"],
            cwd=PROJECT_ROOT,
            stdin=follower,
            stdout=follower,
            stderr=follower,
            timeout=60,
        )
        shown = b""
        while select.select([leader], [], [], 0.5)[0]:
            chunk = os.read(leader, 65536)
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(leader)
        os.close(follower)
    text = shown.decode(errors="replace")
    assert done.returncode == 0, text
    with closing(sqlite3.connect(db)) as conn:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
    assert "backup: 100%|" in text and f"{pages}/{pages}" in text, text
    assert text.count("\r") >= 2, text  # redrawn in place as the pages were copied
    assert "backup: wrote " in text
