"""`python app.py import` makes kills in the server's worker process too: the same database as
without it, and a killed import leaves no worker behind."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from battlefights import FIGHTS, fight
from conftest import until
from test_importer import count
from test_offload import _running

from bench.procstat import children
from killboard.battles.commands import with_battles
from killboard.config import PROJECT_ROOT, Config
from killboard.entities.backlog import with_figures
from killboard.ingest import importer
from killboard.ingest.importer import run_import
from killboard.ingest.offload import Offload

# Every table an imported kill writes to, with the columns that must match (stored_at is the clock's).
TABLES = {
    "kills": "seq, killmail_id, killmail_hash, kill_time, system_id, total_value, body, codec",
    "participants": "*",
    "entity_kills": "*",
    "entity_months": "*",
    "entity_tops": "*",
    "battles": "*",
    "battle_kills": "*",
    "inbox": "*",
}


def _is_tracker(pid: int) -> bool:
    """Whether the child is multiprocessing's resource tracker (not the pool's worker)."""
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return b"resource_tracker" in f.read()


def dump(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    with closing(sqlite3.connect(db)) as conn:
        return {t: conn.execute(f"SELECT {cols} FROM {t} ORDER BY 1, 2").fetchall() for t, cols in TABLES.items()}


async def test_the_worker_stores_what_the_import_alone_stores(
    tmp_path: Path, config: Config, killmails: list[dict[str, Any]]
) -> None:
    """Three real fights and the bundled kills, imported with the worker and without it: the same
    kills (byte for byte), participants, entity figures and battles."""
    sources = []
    for system in FIGHTS:
        sources.append(tmp_path / f"{system}.json")
        sources[-1].write_text(json.dumps(fight(system)))
    sources.append(tmp_path / "bundled.json")
    sources[-1].write_text(json.dumps(killmails))
    prepare = (with_battles, with_figures)
    offload = Offload(config.data_dir)

    async def up() -> bool:
        return offload.ready()

    await until(up, 60)  # started beforehand: the first batch goes to it too
    with_worker = config.with_overrides(db_path=tmp_path / "worker.sqlite3")
    done = await run_import(with_worker, sources, prepare=prepare, worker=offload)
    assert offload.closed and offload.pid() is None  # the import stopped it
    alone = config.with_overrides(db_path=tmp_path / "alone.sqlite3")
    plain = await run_import(alone, sources, prepare=prepare, worker=False)

    assert done.rejected == plain.rejected == 0
    assert done.imported == plain.imported > 500
    # Made there, the rest taken back by the loop (how much each makes depends on the CPU each
    # gets: under load the loop takes back most of a batch, since the worker runs at nice +5).
    assert 0 < done.offloaded <= done.imported
    assert plain.offloaded == 0
    expected, got = dump(tmp_path / "alone.sqlite3"), dump(tmp_path / "worker.sqlite3")
    assert len(expected["battles"]) >= 3 and expected["entity_months"] and not expected["inbox"]
    for table in TABLES:
        assert got[table] == expected[table], table


async def test_a_small_import_starts_no_worker(
    tmp_path: Path, config: Config, killmails: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under WORKER_MIN_BYTES of files the import is done about when a worker would be ready: none
    is started. Over it, one is (and stopped at the end)."""
    started: list[Offload] = []

    class Counted(Offload):
        def __init__(self, data_dir: Path) -> None:
            super().__init__(data_dir)
            started.append(self)

    monkeypatch.setattr(importer, "Offload", Counted)
    source = tmp_path / "bundled.json"
    source.write_text(json.dumps(killmails))
    assert source.stat().st_size < importer.WORKER_MIN_BYTES
    small = await run_import(config.with_overrides(db_path=tmp_path / "small.sqlite3"), [source])
    assert small.imported == len(killmails) and small.offloaded == 0 and not started
    monkeypatch.setattr(importer, "WORKER_MIN_BYTES", source.stat().st_size)
    await run_import(config.with_overrides(db_path=tmp_path / "big.sqlite3"), [source])
    assert len(started) == 1 and started[0].closed


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="reads /proc")
async def test_ctrl_c_stops_an_import_with_one_line_and_keeps_what_it_stored(
    tmp_path: Path, killmails: list[dict[str, Any]]
) -> None:
    """SIGINT (Ctrl-C) to `app.py import` at work: exit status 130, one line on stderr and no
    traceback, no worker left, and the kills it stored or put in the inbox are all still there."""
    source = tmp_path / "kills.jsonl"
    with source.open("w") as f:
        for n in range(8000):
            f.write(json.dumps({**killmails[n % len(killmails)], "killmail_id": 10**9 + n}) + "\n")
    db = tmp_path / "kb.sqlite3"
    command = [sys.executable, "app.py", "import", "--no-upstream", "--db", str(db), str(source)]
    proc = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:

        async def working() -> bool:
            return bool(children(proc.pid)) and count(db, "kills") >= 1000

        await until(working, 60)
        workers = children(proc.pid)
        tracker = [pid for pid in workers if _is_tracker(pid)]
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("import interrupted:"), err
    # The worker was joined before the import exited; multiprocessing's resource tracker reads
    # the end of its pipe only once the import is gone, so it ends a moment later.
    assert not any(_running(worker) for worker in workers if worker not in tracker)

    async def gone() -> bool:
        return not any(_running(pid) for pid in tracker)

    await until(gone, 10)
    kept = count(db, "kills") + count(db, "inbox")
    assert 1000 <= kept < 8000

    # What the inbox held is stored by the next import of the same file, and nothing twice.
    again = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert count(db, "kills") == 8000 and count(db, "inbox") == 0


async def test_a_killed_import_leaves_no_worker(tmp_path: Path, killmails: list[dict[str, Any]]) -> None:
    """kill -9 of `app.py import` while its worker makes kills: the worker (and multiprocessing's
    resource tracker) end by themselves within seconds."""
    source = tmp_path / "kills.jsonl"
    with source.open("w") as f:
        for n in range(8000):  # ~10 s of import: time to find its worker at work
            f.write(json.dumps({**killmails[n % len(killmails)], "killmail_id": 10**9 + n}) + "\n")
    db = tmp_path / "kb.sqlite3"
    command = [sys.executable, "app.py", "import", "--no-upstream", "--db", str(db), str(source)]
    proc = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:

        async def working() -> bool:
            return bool(children(proc.pid)) and count(db, "kills") >= 1000

        await until(working, 60)
        workers = children(proc.pid)
        assert proc.poll() is None, "the import ended before it could be killed"
    finally:
        proc.kill()
        proc.wait(10)

    async def gone() -> bool:
        return not any(_running(worker) for worker in workers)

    await until(gone, 10)  # times out if the worker outlives the killed import
    await asyncio.sleep(0)
