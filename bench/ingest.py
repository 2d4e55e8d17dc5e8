"""Ingest: a backlog of kills (15,000 is about a day of EVE) pushed through the server, against a
floor that only parses the same JSON and inserts it raw with sqlite3.

    python -m bench.ingest [--kills 6000] [--pairs 3] [--baseline DIR]

prints issue 21's ingest figure: with one live subscriber offering permessage-deflate (every
language, as Chrome does), the rate at which the backlog reaches it, as a ratio to the floor
measured in the same run, and the server's CPU per 1,000 kills with its worker process counted.
With `--baseline` (another checkout, e.g. main) the two trees run alternately, `--pairs` times.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import ujson

from killboard.config import PROJECT_ROOT

from .data import real_killmails, stream, take
from .fanout import AUTH
from .procstat import cpu_seconds, load_average, tree_cpu_seconds
from .server import Server
from .wsclient import Pool

POST_BATCH = 500  # kills per POST: half the API's limit
BATCH = 200  # the worker's batch size, used by the floor too


@dataclass
class IngestRun:
    kills: int
    acked_s: float  # first POST to the last 202
    stored_s: float  # first POST to the last kill stored
    broadcast_s: float  # first POST to the last kill received by the subscriber
    server_cpu: float  # the server's and its worker process's
    own_cpu: float  # the server process's alone: the part one process must do (no worker takes it)
    retries: int
    db: Path

    @property
    def stored_rate(self) -> float:
        return self.kills / self.stored_s

    @property
    def broadcast_rate(self) -> float:
        return self.kills / self.broadcast_s


def bodies(killmails: list[dict[str, Any]], count: int) -> list[bytes]:
    kills = take(stream(killmails), count)
    return [json.dumps(kills[i : i + POST_BATCH]).encode() for i in range(0, count, POST_BATCH)]


async def health(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(url + "/health") as resp:
        return await resp.json()


async def run_http(
    workdir: Path, payloads: list[bytes], count: int, deflate: bool = False, root: Path = PROJECT_ROOT
) -> IngestRun:
    """POST the backlog as fast as the server acknowledges it, with one live subscriber (with
    `deflate`: permessage-deflate as Chrome offers it, every language: issue 21's case). `root`:
    the checkout that serves. The CPU is the server's and its worker process's."""
    server = Server(workdir / f"ingest-{time.monotonic_ns()}.sqlite3", root=root)
    pool = Pool(1)
    retries = 0
    try:
        await server.start()
        await pool.connect("127.0.0.1", server.port, 1, deflate=deflate)
        async with aiohttp.ClientSession() as session:
            cpu0, own0 = tree_cpu_seconds(server.pid), cpu_seconds(server.pid)
            start = time.monotonic()
            for body in payloads:
                while True:
                    async with session.post(server.url + "/api/killmails", data=io.BytesIO(body), headers=AUTH) as r:
                        if r.status == 202:
                            break
                        if r.status != 503:  # 503: the queue is full, as the API says: retry
                            raise RuntimeError(f"POST answered {r.status}: {await r.text()}")
                    retries += 1
                    await asyncio.sleep(0.05)
            acked = time.monotonic() - start
            while (await health(session, server.url))["kills"] < count:
                await asyncio.sleep(0.02)
            stored = time.monotonic() - start
            while await pool.received() < count:
                await asyncio.sleep(0.02)
            broadcast = max(await pool.last_arrival() - start, stored)
            cpu, own = tree_cpu_seconds(server.pid) - cpu0, cpu_seconds(server.pid) - own0
        return IngestRun(count, acked, stored, broadcast, cpu, own, retries, server.db)
    finally:
        try:
            await pool.shutdown()
        finally:
            server.stop()


@dataclass
class ImportRun:
    kills: int
    seconds: float  # process start to exit, start-up included
    cpu: float  # user + system CPU of the import process
    stored: int

    @property
    def rate(self) -> float:
        return self.kills / self.seconds


def write_jsonl(workdir: Path, payloads: list[bytes]) -> Path:
    """The same kills as the POST bodies, one per line (what `app.py import` reads fastest)."""
    path = workdir / "backlog.jsonl"
    with path.open("wb") as f:
        for body in payloads:
            for km in ujson.loads(body):
                f.write(ujson.dumps(km).encode() + b"\n")
    return path


def run_import(workdir: Path, source: Path, count: int, tree: Path = PROJECT_ROOT) -> ImportRun:
    """`python app.py import --no-upstream FILE` of checkout `tree` into a new database, as a user
    would run it. CPU: the import's and its worker process's (wait4 counts the children it waited for)."""
    db = workdir / f"import-{time.monotonic_ns()}.sqlite3"
    command = [sys.executable, "app.py", "import", "--db", str(db), "--no-upstream", str(source)]
    start = time.monotonic()
    proc = subprocess.Popen(command, cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    errors = proc.stderr.read()
    _pid, status, usage = os.wait4(proc.pid, 0)  # this child's CPU and its waited-for children's
    seconds = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{tree}: app.py import exited {proc.returncode}: {errors.decode()[-2000:]}")
    with closing(sqlite3.connect(db)) as conn:
        stored = conn.execute("SELECT count(*) FROM kills").fetchone()[0]
    return ImportRun(count, seconds, usage.ru_utime + usage.ru_stime, stored)


def run_floor(workdir: Path, payloads: list[bytes]) -> tuple[int, float]:
    """The unavoidable: parse the same JSON, insert each kill raw in batched transactions
    (WAL, synchronous=NORMAL, like the server). Returns (kills, seconds)."""
    path = workdir / f"floor-{time.monotonic_ns()}.sqlite3"
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE kills (killmail_id INTEGER PRIMARY KEY, body BLOB NOT NULL)")
        count = 0
        start = time.perf_counter()
        for body in payloads:
            items = ujson.loads(body)
            for i in range(0, len(items), BATCH):
                rows = [(km["killmail_id"], ujson.dumps(km).encode()) for km in items[i : i + BATCH]]
                db.execute("BEGIN IMMEDIATE")
                db.executemany("INSERT INTO kills VALUES (?, ?)", rows)
                db.execute("COMMIT")
                count += len(rows)
        return count, time.perf_counter() - start


async def compare(kills: int, pairs: int, baseline: Path | None) -> list[dict[str, Any]]:
    payloads = bodies(real_killmails(), kills)
    trees = [("this tree", PROJECT_ROOT)] + ([("baseline", baseline)] if baseline is not None else [])
    print(f"{kills:,} kills, {len(payloads)} POSTs, one live all-languages deflate subscriber; load {load_average()}")
    print(
        "| tree | broadcast kills/s | floor kills/s | ÷ floor | CPU-s per 1,000 kills (worker counted)"
        " | of it the server process's |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(pairs):
            for name, root in trees:
                run = await run_http(Path(tmp), payloads, kills, deflate=True, root=root)
                count, seconds = run_floor(Path(tmp), payloads)
                floor = count / seconds
                rows.append(
                    {
                        "name": name,
                        "broadcast_rate": run.broadcast_rate,
                        "floor_rate": floor,
                        "ratio": run.broadcast_rate / floor,
                        "cpu_per_1000": run.server_cpu / kills * 1000,
                        "own_cpu_per_1000": run.own_cpu / kills * 1000,
                        "stored": count_stored(run.db),
                    }
                )
                print(
                    f"| {name} | {run.broadcast_rate:,.0f} | {floor:,.0f} | {run.broadcast_rate / floor:.3f}x"
                    f" | {run.server_cpu / kills * 1000:.2f} | {run.own_cpu / kills * 1000:.2f} |",
                    flush=True,
                )
    print(f"load after: {load_average()}")
    return rows


def count_stored(db: Path) -> int:
    with closing(sqlite3.connect(db)) as conn:
        return int(conn.execute("SELECT count(*) FROM kills").fetchone()[0])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=6000)
    parser.add_argument("--pairs", type=int, default=1, help="runs of each tree, alternating")
    parser.add_argument("--baseline", type=Path, help="another checkout (e.g. main) to run the same way")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    rows = asyncio.run(compare(args.kills, args.pairs, args.baseline))
    if args.json is not None:
        args.json.write_text(json.dumps({"rows": rows}, indent=1))


if __name__ == "__main__":
    main()
