"""Bytes and server CPU per delivery by kind of subscriber (plain, permessage-deflate, deflate with
`lang=en`, a mixed population), zlib level 1 against 6 on the real kills, and idle memory per
socket with deflate negotiated.

    python -m bench.wire [--subscribers 1000] [--rate 5] [--seconds 10] [--runs 1]
                         [--baseline DIR] [--memory 10000] [--json FILE]

`--baseline DIR` runs the same plain population against another checkout's app.py (e.g. an
export of the commit before this work) for "today's" figures; it knows neither `lang` nor
deflate, so every socket there gets plain, full frames.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from killboard.config import PROJECT_ROOT
from killboard.kill.codec import default_renderer
from killboard.kill.validate import parse_submission
from killboard.live.wire import KillVariants

from .__main__ import ms, percentile, table
from .data import real_killmails, stream, take
from .fanout import post_one, wait_received
from .memory import run_memory
from .procstat import cpu_seconds, load_average, raise_fd_limit
from .server import Server
from .wsclient import Pool

# kind -> (path, offers deflate)
KINDS = {"plain": ("/ws", False), "deflate": ("/ws", True), "deflate+en": ("/ws?lang=en", True)}
POPULATIONS = {
    "plain": {"plain": 1.0},
    "deflate": {"deflate": 1.0},
    "deflate+en": {"deflate+en": 1.0},
    # A guess at a real audience: mostly pages (browsers: deflate, one language), some bots.
    "mixed": {"deflate+en": 0.6, "deflate": 0.2, "plain": 0.2},
}


def levels(killmails: list[dict[str, Any]], passes: int = 5) -> list[dict[str, Any]]:
    """Deflate each real kill's frame (all languages, English only) at levels 1, 6 and 9."""
    render = default_renderer()
    bodies = [render(parse_submission(km), {}, None) for km in killmails]
    rows = []
    for langs in (None, ("en",)):
        frames = [KillVariants(i, b, 1).frame(langs) for i, b in enumerate(bodies)]
        plain = statistics.mean(map(len, frames))
        rows.append({"lang": langs, "level": 0, "bytes": plain, "us": 0.0})
        for level in (1, 6, 9):
            timings = []
            for _ in range(passes):
                started = time.perf_counter()
                sizes = [len(KillVariants(i, f, level).deflated(None, 15)) for i, f in enumerate(frames)]
                timings.append((time.perf_counter() - started) / len(frames) * 1e6)
            rows.append({"lang": langs, "level": level, "bytes": statistics.mean(sizes), "us": min(timings)})
    return rows


def _counts(population: dict[str, float], total: int) -> dict[str, int]:
    counts = {kind: int(total * share) for kind, share in population.items()}
    first = next(iter(counts))
    counts[first] += total - sum(counts.values())
    return counts


async def run_population(
    workdir: Path,
    killmails: list[dict[str, Any]],
    population: dict[str, float],
    total: int,
    rate: float,
    seconds: float,
    root: Path = PROJECT_ROOT,
) -> dict[str, Any]:
    server = Server(workdir / f"wire-{time.monotonic_ns()}.sqlite3", root=root)
    pool = Pool(1)
    try:
        await server.start()
        counts = _counts(population, total)
        for kind, n in counts.items():
            path, deflate = KINDS[kind]
            await pool.connect("127.0.0.1", server.port, n, path=path, deflate=deflate)
        source = stream(killmails)
        count = max(1, round(rate * seconds))
        async with aiohttp.ClientSession() as session:
            await post_one(session, server.url, next(source))  # warm-up
            await wait_received(pool, total, 60)
            await pool.reset()
            posted: dict[int, float] = {}
            cpu0 = cpu_seconds(server.pid)
            start = time.monotonic()
            for i, km in enumerate(take(source, count)):
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                posted[km["killmail_id"]] = time.monotonic()
                await post_one(session, server.url, km)
            received = await wait_received(pool, total * count, 120)
            cpu = cpu_seconds(server.pid) - cpu0
        traffic = await pool.traffic()
        latencies = sorted(await pool.latencies(posted))
        per_kind = {}
        for kind in counts:
            path, deflate = KINDS[kind]
            got, kills = traffic.get(f"{path} {'deflate' if deflate else 'plain'}", (0, 0))
            per_kind[kind] = got / kills if kills else float("nan")
        return {
            "counts": counts,
            "kills": count,
            "delivered": received,
            "expected": total * count,
            "bytes_per_delivery": per_kind,
            "all_bytes_per_delivery": sum(t[0] for t in traffic.values()) / max(1, received),
            "cpu_us_per_delivery": cpu / received * 1e6 if received else float("nan"),
            "p50": percentile(latencies, 50),
            "p99": percentile(latencies, 99),
        }
    finally:
        try:
            await pool.shutdown()
        finally:
            server.stop()


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=5)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--only", default="levels,populations,memory")
    parser.add_argument("--baseline", type=Path, help="another checkout to measure plain delivery on")
    parser.add_argument("--memory", type=int, default=10_000, help="idle deflate sockets for the memory figure")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    raise_fd_limit()
    killmails = real_killmails()
    only = set(args.only.split(","))
    out: dict[str, Any] = {"load_before": load_average()}
    sections = []
    if "levels" in only:
        measured = levels(killmails)
        out["levels"] = measured
        sections.append(
            "### zlib level on the 82 real kills (one deflate per kill)\n\n"
            + table(
                ["names", "level", "bytes a frame", "µs a kill"],
                [
                    [
                        "all 8 languages" if r["lang"] is None else "en only",
                        r["level"] or "plain",
                        f"{r['bytes']:,.0f}",
                        f"{r['us']:.0f}" if r["level"] else "",
                    ]
                    for r in measured
                ],
            )
        )
    if "populations" in only:
        with tempfile.TemporaryDirectory() as tmp:
            scenarios: list[tuple[str, dict[str, float], Path]] = []
            if args.baseline is not None:
                scenarios.append(("plain, before (baseline)", POPULATIONS["plain"], args.baseline))
            scenarios += [(name, pop, PROJECT_ROOT) for name, pop in POPULATIONS.items()]
            rows: list[list[str]] = []
            out["populations"] = []
            for name, pop, root in scenarios:
                runs = []
                for _ in range(args.runs):
                    runs.append(
                        await run_population(Path(tmp), killmails, pop, args.subscribers, args.rate, args.seconds, root)
                    )
                    print(f"  {name}: {runs[-1]}", file=sys.stderr)
                out["populations"].append({"name": name, "runs": runs})
                r = runs[len(runs) // 2]
                lat99 = statistics.median(x["p99"] for x in runs)
                rows.append(
                    [
                        name,
                        ", ".join(f"{n:,} {k}" for k, n in r["counts"].items()),
                        "; ".join(f"{k} {v:,.0f}" for k, v in r["bytes_per_delivery"].items()),
                        f"{statistics.median(x['all_bytes_per_delivery'] for x in runs):,.0f}",
                        f"{statistics.median(x['cpu_us_per_delivery'] for x in runs):.1f}",
                        f"{sum(x['delivered'] for x in runs):,}/{sum(x['expected'] for x in runs):,}",
                        ms(statistics.median(x["p50"] for x in runs)),
                        ms(lat99),
                    ]
                )
        sections.append(
            f"### Bytes and server CPU per delivery ({args.subscribers:,} subscribers, "
            f"{args.rate:g} kills/s for {args.seconds:g} s, {args.runs} run(s))\n\n"
            + table(
                [
                    "population",
                    "sockets",
                    "B a delivery by kind",
                    "B a delivery",
                    "server µs a delivery",
                    "delivered",
                    "p50",
                    "p99",
                ],
                rows,
            )
        )
    if "memory" in only:
        with tempfile.TemporaryDirectory() as tmp:
            processes = min(4, max(1, args.memory // 2_500))
            run = await run_memory(Path(tmp), [args.memory], processes, deflate=True)
        out["memory"] = {"idle_rss": run.idle_rss, "sockets": args.memory, "per_socket": run.per_socket(args.memory)}
        sections.append(
            f"### Idle memory with deflate negotiated\n\n{args.memory:,} sockets: "
            f"{run.per_socket(args.memory) / 1024:.1f} KiB per socket (RSS {run.idle_rss / 2**20:.1f} MiB idle)"
        )
    out["load_after"] = load_average()
    print("\n\n".join(sections))
    print(f"\nload average {out['load_before']} before, {out['load_after']} after")
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    asyncio.run(main())
