"""Past one process: one process against a writer with 1 and 2 edges over a real redis-server.

`python -m bench.bus` (`--quick` for a smoke run). Each scenario starts fresh processes and
database, spreads the subscribers over the processes that serve sockets (the single process; or
the edges, as deploy/nginx/killboard-edges.conf does, with none on the writer), POSTs real kills
to the writer at a steady rate and reads, per process, CPU time per 1,000 deliveries, plus
deliveries per second, latency POST -> receipt (p50/p99), and the writer-to-edge lag (the
writer's append to the edge's publish, from the stream entry's timestamp).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

from .__main__ import percentile, processes_for
from .data import real_killmails, stream, take
from .fanout import post_one, post_steadily, wait_received
from .procstat import cpu_seconds, load_average, raise_fd_limit
from .server import Server, free_port
from .wsclient import Pool

SCENARIOS = (("one process", 0), ("writer + 1 edge", 1), ("writer + 2 edges", 2))


class Redis:
    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=folder,
            stdout=subprocess.DEVNULL,
        )
        time.sleep(0.3)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


async def bus_status(server: Server) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(server.url + "/health") as resp:
        status: dict[str, Any] = (await resp.json())["bus"]
        return status


async def run(workdir: Path, edges: int, subscribers: int, rate: float, seconds: float) -> dict[str, Any]:
    redis = Redis(workdir) if edges else None
    env = {"KILLBOARD_REDIS_URL": redis.url} if redis else {}
    tag = time.monotonic_ns()
    writer = Server(workdir / f"bus-writer-{tag}.sqlite3", env=env)
    edge_servers = [Server(workdir / f"bus-edge{i}-{tag}.sqlite3", env=env, args=["edge"]) for i in range(edges)]
    pool = Pool(processes_for(subscribers))
    try:
        await writer.start()
        for server in edge_servers:
            await server.start()
            while not (await bus_status(server))["connected"]:
                await asyncio.sleep(0.05)
        serving = edge_servers or [writer]
        for i, server in enumerate(serving):
            share = subscribers // len(serving) + (i < subscribers % len(serving))
            await pool.connect("127.0.0.1", server.port, share)
        killmails = real_killmails()
        source = stream(killmails)
        count = max(1, round(rate * seconds))
        async with aiohttp.ClientSession() as session:
            await post_one(session, writer.url, next(source))  # warm-up
            await wait_received(pool, subscribers, 60)
            await pool.reset()
            lag0 = [await bus_status(s) for s in edge_servers]
            procs = {"writer" if edges else "one process": writer.pid}
            procs.update({f"edge {i + 1}": s.pid for i, s in enumerate(edge_servers)})
            if redis:
                procs["redis-server"] = redis.proc.pid
            cpu0 = {name: cpu_seconds(pid) for name, pid in procs.items()}
            posted, start = await post_steadily(session, writer.url, take(source, count), rate)
            expected = subscribers * count
            received = await wait_received(pool, expected, 60 + expected / 20_000)
            cpu = {name: cpu_seconds(pid) - cpu0[name] for name, pid in procs.items()}
            lag1 = [await bus_status(s) for s in edge_servers]
        latencies = sorted(await pool.latencies(posted))
        elapsed = max(await pool.last_arrival() - start, 1e-9)
        per_process = received / len(serving)
        lags = [
            (b["lag_total_seconds"] - a["lag_total_seconds"]) / max(1, b["entries"] - a["entries"])
            for a, b in zip(lag0, lag1, strict=True)
        ]
        return {
            "scenario": SCENARIOS[edges][0],
            "subscribers": subscribers,
            "kills": count,
            "rate": rate,
            "delivered": received,
            "expected": expected,
            "deliveries_per_s": received / elapsed,
            "p50": percentile(latencies, 50),
            "p99": percentile(latencies, 99),
            "cpu": cpu,
            # Sockets are spread evenly: each serving process made `per_process` deliveries.
            "cpu_per_1000": {
                name: c / per_process * 1000 if name.startswith(("edge", "one")) else c / received * 1000
                for name, c in cpu.items()
            },
            "lag_mean": sum(lags) / len(lags) if lags else None,
            "lag_max": max((b["lag_max_seconds"] for b in lag1), default=None),
        }
    finally:
        try:
            await pool.shutdown()
        finally:
            writer.stop()
            for server in edge_servers:
                server.stop()
            if redis:
                redis.stop()


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| setup | subscribers | kills | deliveries/s | delivered | CPU-s per 1,000 deliveries, by process |"
        " p50 | p99 | writer → edge lag (mean / max) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cpu = ", ".join(f"{name} {value:.3f}" for name, value in r["cpu_per_1000"].items())
        lag = f"{r['lag_mean'] * 1000:.1f} / {r['lag_max'] * 1000:.1f} ms" if r["lag_mean"] is not None else ""
        lines.append(
            f"| {r['scenario']} | {r['subscribers']:,} | {r['rate']:g}/s × {r['kills']} | {r['deliveries_per_s']:,.0f}"
            f" | {r['delivered']:,}/{r['expected']:,} | {cpu} | {r['p50'] * 1000:.1f} ms | {r['p99'] * 1000:.1f} ms"
            f" | {lag} |"
        )
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    raise_fd_limit()
    rows = []
    before = load_average()[0]
    with tempfile.TemporaryDirectory(prefix="killboard-bench-bus-") as tmp:
        for subscribers in args.subscribers:
            for _name, edges in SCENARIOS:
                rows.append(await run(Path(tmp), edges, subscribers, args.rate, args.seconds))
                print(table(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    print(f"load average (1 min): {before:.2f} before, {load_average()[0]:.2f} after\n")
    print(table(rows))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bus", description=__doc__)
    parser.add_argument("--subscribers", type=int, nargs="+", default=[1_000, 10_000])
    parser.add_argument("--rate", type=float, default=5.0, help="kills per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--quick", action="store_true", help="smoke run: 60 subscribers, 2 s")
    parser.add_argument("--json", help="write every figure to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.subscribers, args.seconds = [60], 2.0
    rows = asyncio.run(main_async(args))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0 if all(r["delivered"] == r["expected"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
