"""The server's CPU for each page's first view, and the part of it on the event loop's thread.

    python -m bench.firstcpu --kills 20000 --rounds 3 --baseline /work/main

The real server (`app.py` of this tree, and of `--baseline`, alternating, each on a fresh copy
of one database filled as bench/pages.py fills it) is asked each page's first view 5 s after its
start, then a kill joins the median battle and its page and JSON are asked again. For each view:
the server process's CPU (all its threads) and its main thread's alone (the event loop), read
from /proc/<pid>/task/<tid>/schedstat (nanoseconds: /proc's stat counts 10 ms ticks). Unlike
the wall time or a ping's pong (bench/pages.py --stalls), neither depends much on the machine's
load: the loop's CPU during a view bounds how long that view's own work kept the loop busy.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.data import real_killmails  # noqa: E402
from bench.fanout import post_one  # noqa: E402
from bench.pages import fill, fresh, others  # noqa: E402
from bench.server import Server  # noqa: E402


def thread_cpu(pid: int, tid: int | str) -> float:
    """Seconds a thread ran on a CPU (the first field of schedstat, in ns)."""
    with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
        return int(f.read().split()[0]) / 1e9


def process_cpu(pid: int) -> float:
    total = 0.0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with suppress(FileNotFoundError, ProcessLookupError):  # a thread that ended meanwhile
            total += thread_cpu(pid, tid)  # (the server's pools keep their threads)
    return total


async def first_views(
    tree: Path, db: Path, paths: list[str], change: dict[str, Any], changed: list[str]
) -> dict[str, tuple[float, float]]:
    """path -> (server CPU ms, of it on the loop's thread ms) of its first view."""
    server = Server(db, root=tree)
    await server.start()
    out: dict[str, tuple[float, float]] = {}
    try:
        await asyncio.sleep(5)  # what the server does at start in the background is over
        pid = server.pid
        async with aiohttp.ClientSession(auto_decompress=False) as session:

            async def view(label: str, path: str) -> None:
                await asyncio.sleep(0.3)
                cpu, loop = process_cpu(pid), thread_cpu(pid, pid)
                async with session.get(server.url + path, headers={"Accept-Encoding": "gzip"}) as resp:
                    assert resp.status == 200, (path, resp.status)
                    await resp.read()
                await asyncio.sleep(0.2)  # work after the answer (a kept page's gzip) counts too
                out[label] = ((process_cpu(pid) - cpu) * 1e3, (thread_cpu(pid, pid) - loop) * 1e3)

            for path in paths:
                await view(path, path)
            await post_one(session, server.url, change)
            await asyncio.sleep(1.5)  # stored, and in the battle
            for path in changed:
                await view(f"after a kill: {path}", path)
    finally:
        server.stop()
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="another checkout, run alternately with this one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "kb.sqlite3"
        ids = await fill(db, args.kills)
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ids["battle_time"]))
        change = {**real_killmails()[ids["battle_kill"]], "killmail_id": 10**10 + 10**8, "killmail_time": when}
        paths = [*others(ids), "/", "/?sec=lowsec&solo=1", f"/?system={ids['system']}"]
        changed = paths[:4]
        trees = ([("baseline", args.baseline)] if args.baseline else []) + [("this", ROOT)]
        got: dict[str, dict[str, list[tuple[float, float]]]] = {}
        loads = [os.getloadavg()[0]]
        for _ in range(args.rounds):
            for name, tree in trees:
                for path, figures in (await first_views(tree, fresh(db, name), paths, change, changed)).items():
                    got.setdefault(path, {}).setdefault(name, []).append(figures)
                loads.append(os.getloadavg()[0])
    print(f"first views, server CPU ms (of it on the loop's thread), load {min(loads):.1f}-{max(loads):.1f}")
    print(f"{'path':46} {'tree':8} {'median CPU':>10} {'loop':>6}   each round: CPU (loop)")
    for path, by_tree in got.items():
        for name, runs in by_tree.items():
            cpu = statistics.median(r[0] for r in runs)
            loop = statistics.median(r[1] for r in runs)
            each = ", ".join(f"{c:.0f} ({lp:.0f})" for c, lp in runs)
            print(f"{path:46} {name:8} {cpu:10.1f} {loop:6.1f}   {each}")


if __name__ == "__main__":
    asyncio.run(main())
