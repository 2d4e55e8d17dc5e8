"""What an entity page costs with 100,000 kills stored, and what the figures cost to keep.

    python bench/entities.py                  # 100,000 kills over the last 12 months
    python bench/entities.py --kills 10000    # quicker

Stores copies of the 82 real kills under new ids (tests/killgen.py), spread over a year, with the
entity figures kept as the server keeps them; then starts the real app in this process and
times, warm, the server's work for the busiest region, alliance, corporation and character:
the figures (`Entities.figures`) and the page's kills (`Entities.kills`) by this process's CPU,
and GET /api/{kind}/{id} and the page /{kind}/{id} through HTTP (client included: an upper bound).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import aiohttp  # noqa: E402
from aiohttp.test_utils import TestClient, TestServer  # noqa: E402
from killgen import make_kills  # noqa: E402
from serverproc import ServerProcess  # noqa: E402

from bench.procstat import cpu_seconds  # noqa: E402
from killboard.config import Config  # noqa: E402
from killboard.entities import backlog, entities_key  # noqa: E402
from killboard.kill.staticdata import load_static  # noqa: E402
from killboard.server import create_app  # noqa: E402
from killboard.storage.store import Store  # noqa: E402

DAY = 86_400


def killmails() -> list[dict[str, Any]]:
    files = sorted((ROOT / "tests" / "data" / "killmails").glob("[0-9]*.json"), key=lambda p: int(p.stem))
    return [json.loads(p.read_text()) for p in files]


async def cpu(call: Callable[[], Awaitable[Any]], runs: int) -> float:
    """Median CPU seconds of `call` (this process: the app, its database threads, the client)."""
    await call()  # warm
    times = []
    for _ in range(runs):
        start = time.process_time()
        await call()
        times.append(time.process_time() - start)
    return statistics.median(times)


async def write_cost(static: Any, kms: list[dict[str, Any]], count: int, folder: Path) -> None:
    """CPU a kill of save_kills (batches of 200) without and with the figures' writer."""
    kills = make_kills(static, kms, count, 900_000_000, int(time.time()))
    for name, attach in (("participant index only", False), ("with the entity figures", True)):
        store = await Store.open(folder / f"write-{attach}.sqlite3")
        if attach:
            backlog.attach(store, static)
        start = time.process_time()
        for i in range(0, len(kills), 200):
            await store.save_kills(kills[i : i + 200])
        print(f"save_kills, {name}: {(time.process_time() - start) / count * 1e3:.3f} ms CPU a kill")
        await store.close()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    static = load_static(ROOT / "data")
    kms = killmails()
    with tempfile.TemporaryDirectory() as tmp:
        await write_cost(static, kms, min(args.kills, 10_000), Path(tmp))
        db = Path(tmp) / "kb.sqlite3"
        store = await Store.open(db)
        backlog.attach(store, static)
        now = int(time.time())
        t = time.perf_counter()
        write_cpu = 0.0
        for first in range(0, args.kills, 1000):
            when = now - 365 * DAY + first * 365 * DAY // args.kills
            batch = make_kills(static, kms, min(1000, args.kills - first), 400_000_000 + first, when)
            start = time.process_time()
            for i in range(0, len(batch), 200):
                await store.save_kills(batch[i : i + 200])
            write_cpu += time.process_time() - start
        elapsed = time.perf_counter() - t
        await store.checkpoint()
        await store.close()
        sizes = dict(sqlite3.connect(db).execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall())
        print(
            f"{args.kills} kills stored with the figures in {elapsed:.0f} s ({write_cpu / args.kills * 1e3:.2f} ms CPU"
            " a kill, all of saving); figures tables"
            f" {(sizes['entity_months'] + sizes['entity_tops']) / args.kills:.0f} B a kill"
        )
        start = time.process_time()
        store = await Store.open(db)
        rebuilt = await backlog.rebuild(store, static)
        await store.close()
        print(f"entities rebuild: {rebuilt} kills in {time.process_time() - start:.1f} s CPU")

        app = create_app(Config(db_path=db, live_max_age=0, upstream=False), static)
        async with TestClient(TestServer(app)) as client:
            service = app[entities_key]
            busiest = {}
            for kind, code in (("region", 9), ("alliance", 3), ("corporation", 2), ("character", 1)):
                row = (
                    sqlite3.connect(db)
                    .execute(
                        "SELECT id, sum(kills + losses) FROM entity_months WHERE kind = ?"
                        " GROUP BY id ORDER BY 2 DESC LIMIT 1",
                        (code,),
                    )
                    .fetchone()
                )
                busiest[kind] = (row[0], row[1])
            print("warm, median of", args.runs, "(CPU ms):")
            print("| entity | kills+losses | figures | 50 kills | GET /api/{kind}/{id} | GET /{kind}/{id} |")
            print("|---|---:|---:|---:|---:|---:|")
            for kind, (entity, count) in busiest.items():
                figures = await cpu(partial(service.figures, kind, entity), args.runs)
                kills = await cpu(partial(service.kills, kind, entity, None, None, 50, None), args.runs)

                async def get(path: str) -> None:
                    resp = await client.get(path)
                    await resp.read()
                    assert resp.status == 200, path

                api = await cpu(partial(get, f"/api/{kind}/{entity}"), args.runs)
                page = await cpu(partial(get, f"/{kind}/{entity}"), args.runs)
                print(
                    f"| {kind} {entity} | {count} | {figures * 1e3:.2f} | {kills * 1e3:.2f} | {api * 1e3:.2f}"
                    f" | {page * 1e3:.2f} |"
                )
        await server_cpu(db, busiest, args.runs)


async def server_cpu(db: Path, busiest: dict[str, tuple[int, int]], runs: int) -> None:
    """The real server (`python app.py`) in its own process: its CPU time per request, client excluded."""
    server = ServerProcess(db, env={"KILLBOARD_UPSTREAM": "off"})
    await server.start(60)
    assert server.proc is not None
    pid = server.proc.pid
    try:
        print(f"the server in its own process, CPU ms a request (mean of {runs * 10} after a warm-up):")
        print("| entity | GET /api/{kind}/{id} | GET /{kind}/{id} | the page, not gzipped | GET /api/search?q= |")
        print("|---|---:|---:|---:|---:|")
        async with aiohttp.ClientSession() as session:

            async def per_request(path: str, headers: dict[str, str] | None = None) -> float:
                async with session.get(server.url + path, headers=headers) as resp:
                    await resp.read()
                # /proc counts in clock ticks (10 ms): the mean of many requests, not a median of each.
                start = cpu_seconds(pid)
                for _ in range(runs * 10):
                    async with session.get(server.url + path, headers=headers) as resp:
                        await resp.read()
                        assert resp.status == 200, path
                return (cpu_seconds(pid) - start) / (runs * 10)

            for kind, (entity, _) in busiest.items():
                api = await per_request(f"/api/{kind}/{entity}")
                page = await per_request(f"/{kind}/{entity}")
                plain = await per_request(f"/{kind}/{entity}", {"Accept-Encoding": "identity"})
                found = await per_request("/api/search?q=" + kind[:2])
                print(
                    f"| {kind} {entity} | {api * 1e3:.2f} | {page * 1e3:.2f} | {plain * 1e3:.2f} | {found * 1e3:.2f} |"
                )
    finally:
        server.stop()


if __name__ == "__main__":
    asyncio.run(main())
