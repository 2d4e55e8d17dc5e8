"""CPU per page view and views a second, of one source tree, on a database filled beforehand.

    python bench/pageviews.py --tree /work/main --db kb.sqlite3 PATH...

Run by bench/pages.py once per tree (this one and a baseline) in a subprocess each, so both are
measured on the same database in the same run. It imports `killboard` from `--tree`, starts the
real app (aiohttp TestServer, real SQLite) and a client in this one process, and prints one JSON
line: for each path the CPU of the first view, the median CPU of the views after it, and views a
second per CPU-second while repeating it for `--seconds` (client included: the figures are an
upper bound of the server's own cost). Also how long the first filtered page took once the
start was over (the keys learned in the background, where the tree does that).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any


async def measure(db: Path, paths: list[str], rounds: int, seconds: float, headers: dict[str, str]) -> dict[str, Any]:
    from aiohttp.test_utils import TestClient, TestServer

    from killboard.config import Config
    from killboard.server import create_app
    from killboard.web.keys import recent_key

    config = Config(db_path=db, ingest_token=None, live_max_age=0, upstream=False)
    out: dict[str, Any] = {}
    # The client does not inflate what it gets: its CPU counts in the figures, and inflating a
    # large gzipped body (an entity's 50 kills: ~1 MB of JSON) would cost it more than the server.
    async with TestClient(TestServer(create_app(config)), auto_decompress=False) as client:
        # A reader arriving once the start is over: the keys of the newest kills are learned in
        # the background where the tree does that (within 6 s here, else never: the baseline).
        recent = client.app[recent_key]
        started = time.perf_counter()
        while not len(recent) and time.perf_counter() - started < 6:
            await asyncio.sleep(0.05)
        out["keys learned after (s)"] = time.perf_counter() - started if len(recent) else None
        filtered = next(p for p in paths if p.startswith("/?"))
        started, cpu_started = time.perf_counter(), time.process_time()
        resp = await client.get(filtered, headers=headers)
        await resp.read()
        out["first filtered page (ms wall)"] = (time.perf_counter() - started) * 1e3
        out["first filtered page (ms CPU)"] = (time.process_time() - cpu_started) * 1e3
        for path in paths:
            cpu = []
            for _ in range(rounds + 1):
                before = time.process_time()
                resp = await client.get(path, headers=headers)
                assert resp.status == 200, (path, resp.status)
                await resp.read()
                cpu.append(time.process_time() - before)
            views, cpu_start, wall_end = 0, time.process_time(), time.perf_counter() + seconds
            while time.perf_counter() < wall_end:
                resp = await client.get(path, headers=headers)
                await resp.read()
                views += 1
            used = time.process_time() - cpu_start
            out[path] = {
                "first_ms": cpu[0] * 1e3,
                "median_ms": statistics.median(cpu[1:]) * 1e3,
                "views_per_cpu_s": views / used if used else float("inf"),
            }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, required=True)
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--lang", default="en")
    parser.add_argument("paths", nargs="+")
    args = parser.parse_args()
    sys.path.insert(0, str(args.tree.resolve()))
    headers = {"Accept-Language": args.lang, "Accept-Encoding": "gzip"}
    print(json.dumps(asyncio.run(measure(args.db, args.paths, args.rounds, args.seconds, headers))))


if __name__ == "__main__":
    main()
