"""`python -m bench` (or `make bench`): every benchmark, then the tables for docs/performance.md.

`--quick` is a smoke run with small numbers (seconds, used by the test suite); the full run
takes a few minutes and wants a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import fanout, ingest, memory, startup
from .data import fleet_fight_of_size, real_killmails
from .procstat import load_average, machine, raise_fd_limit

ALL = ("fanout", "big", "ingest", "memory", "startup")


@dataclass(frozen=True)
class Plan:
    runs: int
    fanout: tuple[tuple[int, float, float], ...]  # (subscribers, kills/s, seconds)
    big: tuple[tuple[int, float, float], ...]
    big_bytes: int
    ingest_kills: int
    memory_steps: tuple[int, ...]
    startup_runs: int


FULL = Plan(
    runs=3,
    fanout=((100, 5, 10), (1_000, 5, 10), (10_000, 5, 10)),
    big=((100, 1, 5), (1_000, 1, 5)),
    big_bytes=1 << 20,
    ingest_kills=15_000,
    memory_steps=(1_000, 10_000),
    startup_runs=5,
)
QUICK = Plan(
    runs=1,
    fanout=((50, 5, 2),),
    big=((10, 2, 1),),
    big_bytes=256 << 10,
    ingest_kills=1_000,
    memory_steps=(200,),
    startup_runs=2,
)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of sorted values."""
    if not values:
        return float("nan")
    return values[min(len(values) - 1, max(0, round(q / 100 * len(values) + 0.5) - 1))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def processes_for(subscribers: int) -> int:
    # One client loop handles ~2,500 cheap sockets comfortably; more loops than cores only
    # steal CPU from the server on a small machine.
    return min(4, max(1, subscribers // 2_500))


async def bench_fanout(
    workdir: Path, plan: Plan, killmails: list[dict[str, Any]], big: bool, out: dict[str, Any]
) -> str:
    rows = []
    scenarios: list[tuple[int, float, float, int, dict[str, Any] | None]]
    if big:
        km, frame = fleet_fight_of_size(killmails, plan.big_bytes)
        scenarios = [(n, rate, secs, frame, km) for n, rate, secs in plan.big]
        title = f"Fan-out of a {size(frame)} kill ({len(km['attackers'])} attackers)"
    else:
        from .data import enriched_size

        avg = statistics.mean(enriched_size(k) for k in killmails[:20])
        scenarios = [(n, rate, secs, int(avg), None) for n, rate, secs in plan.fanout]
        title = "Fan-out of real kills"
    results = out.setdefault("big" if big else "fanout", [])
    for n, rate, secs, frame, kill in scenarios:
        runs = []
        for _ in range(plan.runs):
            runs.append(await fanout.run_fanout(workdir, killmails, n, rate, secs, processes_for(n), frame, kill))
            r = runs[-1]
            print(f"  {n} subscribers: {r.deliveries}/{r.expected} in {r.seconds:.2f} s", file=sys.stderr)
        lat = sorted(x for r in runs for x in r.latencies)
        row = {
            "subscribers": n,
            "frame_bytes": frame,
            "rate": rate,
            "kills_per_run": runs[0].kills,
            "runs": len(runs),
            "delivered": sum(r.deliveries for r in runs),
            "expected": sum(r.expected for r in runs),
            "deliveries_per_s": statistics.median(r.deliveries_per_s for r in runs),
            "cpu_per_1000": statistics.median(r.cpu_per_1000 for r in runs),
            "p50": percentile(lat, 50),
            "p99": percentile(lat, 99),
            "max": lat[-1] if lat else float("nan"),
        }
        results.append(row)
        rows.append(
            [
                f"{n:,}",
                f"{rate:g}/s × {row['kills_per_run']}",
                f"{row['deliveries_per_s']:,.0f}",
                f"{row['delivered']:,}/{row['expected']:,}",
                f"{row['cpu_per_1000']:.3f}",
                ms(row["p50"]),
                ms(row["p99"]),
                ms(row["max"]),
            ]
        )
    header = ["subscribers", "kills", "deliveries/s", "delivered", "server CPU-s per 1,000", "p50", "p99", "max"]
    note = f"(frame ≈ {size(scenarios[0][3])}; median of {plan.runs} runs; latency POST → receipt, all runs)"
    return f"### {title}\n{note}\n\n" + table(header, rows)


async def bench_ingest(workdir: Path, plan: Plan, killmails: list[dict[str, Any]], out: dict[str, Any]) -> str:
    payloads = ingest.bodies(killmails, plan.ingest_kills)
    backlog = ingest.write_jsonl(workdir, payloads)
    http, deflated, imports, floors = [], [], [], []
    for _ in range(plan.runs):
        http.append(await ingest.run_http(workdir, payloads, plan.ingest_kills))
        print(f"  http: {http[-1].stored_rate:,.0f} kills/s stored", file=sys.stderr)
        deflated.append(await ingest.run_http(workdir, payloads, plan.ingest_kills, deflate=True))
        print(f"  http, deflate subscriber: {deflated[-1].broadcast_rate:,.0f} kills/s broadcast", file=sys.stderr)
        imports.append(await asyncio.to_thread(ingest.run_import, workdir, backlog, plan.ingest_kills))
        print(f"  import: {imports[-1].rate:,.0f} kills/s", file=sys.stderr)
        floors.append(ingest.run_floor(workdir, payloads))
    out["ingest_db"] = str(http[-1].db)
    floor_rate = statistics.median(n / s for n, s in floors)
    stored = statistics.median(r.stored_rate for r in http)
    imported = statistics.median(r.rate for r in imports)
    out["ingest"] = {
        "kills": plan.ingest_kills,
        "http": [asdict(r) | {"db": str(r.db)} for r in http],
        "http_deflate_subscriber": [asdict(r) | {"db": str(r.db)} for r in deflated],
        "import": [asdict(r) for r in imports],
        "floor_rate": floor_rate,
    }
    n = f"{plan.ingest_kills:,}"
    rows = [
        [
            "HTTP POST (500 per request), 1 live subscriber",
            n,
            f"{statistics.median(plan.ingest_kills / r.acked_s for r in http):,.0f}",
            f"{stored:,.0f}",
            f"{statistics.median(r.broadcast_rate for r in http):,.0f}",
            f"{statistics.median(r.server_cpu / r.kills * 1000 for r in http):.3f}",
            f"{floor_rate / stored:.1f}×",
        ],
        [
            "HTTP POST, 1 live subscriber with permessage-deflate, every language",
            n,
            f"{statistics.median(plan.ingest_kills / r.acked_s for r in deflated):,.0f}",
            f"{statistics.median(r.stored_rate for r in deflated):,.0f}",
            f"{statistics.median(r.broadcast_rate for r in deflated):,.0f}",
            f"{statistics.median(r.server_cpu / r.kills * 1000 for r in deflated):.3f}",
            f"{floor_rate / statistics.median(r.broadcast_rate for r in deflated):.1f}×",
        ],
        [
            "`app.py import` of a .jsonl file (start-up included; not broadcast)",
            n,
            "",
            f"{imported:,.0f}",
            "",
            f"{statistics.median(r.cpu / r.kills * 1000 for r in imports):.3f}",
            f"{floor_rate / imported:.1f}×",
        ],
        ["floor: parse JSON + raw sqlite3 insert", n, "", f"{floor_rate:,.0f}", "", "", "1×"],
    ]
    header = ["path", "kills", "acknowledged/s", "stored/s", "broadcast/s", "CPU-s per 1,000", "floor ÷ ours"]
    return f"### Ingest of a backlog\n(median of {plan.runs} runs)\n\n" + table(header, rows)


async def bench_memory(workdir: Path, plan: Plan, out: dict[str, Any]) -> str:
    top = max(plan.memory_steps)
    run = await memory.run_memory(workdir, list(plan.memory_steps), processes_for(top))
    out["memory"] = asdict(run)
    rows = [["0 (idle)", size(run.idle_rss), "", ""]]
    for n, (rss, fds) in sorted(run.with_sockets.items()):
        rows.append([f"{n:,}", size(rss), size(run.per_socket(n)), str(fds)])
    return "### Memory (RSS of the server)\n\n" + table(["idle subscribers", "RSS", "per subscriber", "fds"], rows)


async def bench_startup(workdir: Path, plan: Plan, out: dict[str, Any]) -> str:
    rows = []
    cases: list[tuple[str, Path | None]] = [("new database", None)]
    if out.get("ingest_db"):
        cases.append((f"{out['ingest']['kills']:,} kills stored", Path(out["ingest_db"])))
    out["startup"] = {}
    for label, db in cases:
        times = []
        for _ in range(plan.startup_runs):
            times.append(await (startup.fresh(workdir) if db is None else startup.run_startup(db)))
        out["startup"][label] = times
        rows.append([label, ms(statistics.median(times)), ms(max(times)), len(times)])
    header = ["database", "median", "max", "runs"]
    return "### Start-up (process start → first 200 from /health)\n\n" + table(header, rows)


async def main_async(args: argparse.Namespace) -> int:
    plan = QUICK if args.quick else FULL
    if args.runs:
        plan = Plan(**{**asdict(plan), "runs": args.runs})
    only = args.only.split(",") if args.only else list(ALL)
    unknown = set(only) - set(ALL)
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {sorted(unknown)}; choose from {', '.join(ALL)}")
    raise_fd_limit()
    killmails = real_killmails()
    out: dict[str, Any] = {"machine": machine(), "load_before": load_average(), "quick": args.quick}
    sections = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="killboard-bench-") as tmp:
        workdir = Path(tmp)
        for name in ALL:
            if name not in only:
                continue
            print(f"running {name} …", file=sys.stderr)
            if name in ("fanout", "big"):
                sections.append(await bench_fanout(workdir, plan, killmails, name == "big", out))
            elif name == "ingest":
                sections.append(await bench_ingest(workdir, plan, killmails, out))
            elif name == "memory":
                sections.append(await bench_memory(workdir, plan, out))
            elif name == "startup":
                sections.append(await bench_startup(workdir, plan, out))
    out["load_after"] = load_average()
    facts = out["machine"]
    load = f"{out['load_before'][0]:.2f} before, {out['load_after'][0]:.2f} after"
    head = table(["machine", ""], [*([k, v] for k, v in facts.items()), ["load average (1 min)", load]])
    print(f"{head}\n\n" + "\n\n".join(sections))
    print(f"\n(bench took {time.monotonic() - started:.0f} s{'; quick mode' if args.quick else ''})")
    args.results = out
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke run with small numbers (seconds)")
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(ALL)}")
    parser.add_argument("--runs", type=int, help="runs per scenario (default 3, quick 1)")
    parser.add_argument("--json", help="also write every figure to this file")
    args = parser.parse_args(argv)
    code = asyncio.run(main_async(args))
    if args.json:
        Path(args.json).write_text(json.dumps(args.results, indent=1, default=str))
    return code


if __name__ == "__main__":
    sys.exit(main())
