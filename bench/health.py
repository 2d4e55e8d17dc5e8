"""What one `GET /health` costs the server: thread hand-offs, CPU and wait per request.

    python -m bench.health [--requests 500] [--rounds 2] [--baseline DIR]

A real server process with the bundled kills stored, then `--requests` requests one after
another on one keep-alive connection. The voluntary context switches of the server's threads
(/proc) count the hops to the database's threads: each hop is a hand-off there and back, and
each waits for the GIL when other threads hold it (a fleet fight's, bench.bigkill). CPU comes in
10 ms ticks: the mean over many requests. `--baseline DIR` runs another checkout the same way,
alternating with this one, `--rounds` times each.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp

from .data import real_killmails
from .fanout import post_one
from .procstat import load_average
from .server import Server, trees
from .solokill import threads


async def measure(root: Path, requests: int, workdir: Path) -> tuple[float, float, float, float]:
    """(switches, CPU ms, median ms, p99 ms) a request, for one fresh server of checkout `root`."""
    server = Server(workdir / f"health-{time.monotonic_ns()}.sqlite3", root=root, env={"KILLBOARD_LOOP": "asyncio"})
    await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            for km in real_killmails():
                await post_one(session, server.url, km)
            for _ in range(50):  # stored, the kept count made, the connection open
                async with session.get(server.url + "/health") as resp:
                    await resp.read()
            await asyncio.sleep(1.0)
            waits = []
            before = threads(server.pid)
            for _ in range(requests):
                started = time.perf_counter()
                async with session.get(server.url + "/health") as resp:
                    await resp.read()
                waits.append(time.perf_counter() - started)
            spent = threads(server.pid) - before
    finally:
        server.stop()
    cpu = spent.loop_user + spent.loop_sys + spent.other_user + spent.other_sys
    waits.sort()
    p99 = waits[min(len(waits) - 1, int(len(waits) * 0.99))]
    return spent.switches / requests, cpu * 1e3 / requests, statistics.median(waits) * 1e3, p99 * 1e3


async def compare(args: argparse.Namespace) -> None:
    compared = trees(args.baseline)
    print(f"load before: {' '.join(f'{x:.1f}' for x in load_average())}; {args.requests} requests a run")
    print("\n| tree (round) | voluntary switches a request | CPU-ms a request | median ms | p99 ms |")
    print("|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(args.rounds):
            for name, root in compared:
                switches, cpu, median, p99 = await measure(root, args.requests, Path(tmp))
                print(f"| {name} ({n + 1}) | {switches:.1f} | {cpu:.3f} | {median:.2f} | {p99:.2f} |", flush=True)
    print(f"\nload after: {' '.join(f'{x:.1f}' for x in load_average())}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--baseline", default=None, help="another checkout (e.g. /work/main) to run the same way")
    asyncio.run(compare(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
