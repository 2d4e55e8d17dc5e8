"""What a kill posted alone costs the server, with nobody subscribed: per thread, per kill.

    python -m bench.solokill [--kills 50] [--rate 5] [--rounds 3] [--baseline DIR] [--warm]

A real server process (as bench.fanout's "the kill's own cost"): one warm-up kill, then `--kills`
kills POSTed one at a time at `--rate` a second. CPU comes from /proc (10 ms ticks) for the event
loop's thread and for all the others (SQLite's threads, executors), with the voluntary context
switches (thread hand-offs) per kill. `--baseline DIR` runs another checkout the same way,
alternating with this one, `--rounds` times each. `--warm` posts the bundled kills once before
measuring, so that what a fresh server learns once (type names, ~40 µs each) is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from .data import real_killmails, stream, take
from .fanout import post_one, post_steadily
from .procstat import CLOCK_TICKS, load_average
from .server import Server, trees


@dataclass(frozen=True)
class Threads:
    """CPU seconds (user, system) of the loop's thread and of all other threads, and voluntary
    context switches of the whole process."""

    loop_user: float
    loop_sys: float
    other_user: float
    other_sys: float
    switches: int

    def __sub__(self, before: Threads) -> Threads:
        return Threads(
            self.loop_user - before.loop_user,
            self.loop_sys - before.loop_sys,
            self.other_user - before.other_user,
            self.other_sys - before.other_sys,
            self.switches - before.switches,
        )


def threads(pid: int) -> Threads:
    loop = [0, 0]
    other = [0, 0]
    switches = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                switches += next(int(line.split()[1]) for line in f if line.startswith("voluntary_ctxt_switches"))
        except (OSError, StopIteration):
            continue  # a thread that ended meanwhile
        into = loop if int(tid) == pid else other
        into[0] += int(fields[11])
        into[1] += int(fields[12])
    return Threads(
        loop[0] / CLOCK_TICKS, loop[1] / CLOCK_TICKS, other[0] / CLOCK_TICKS, other[1] / CLOCK_TICKS, switches
    )


async def measure(root: Path, kills: int, rate: float, warm: bool, workdir: Path) -> Threads:
    """One fresh server of checkout `root`; CPU of `kills` kills posted alone."""
    server = Server(workdir / f"solo-{time.monotonic_ns()}.sqlite3", root=root, env={"KILLBOARD_LOOP": "asyncio"})
    await server.start()
    try:
        bundled = real_killmails()
        source = stream(bundled)
        async with aiohttp.ClientSession() as session:
            for km in take(source, len(bundled) if warm else 1):
                await post_one(session, server.url, km)
            await asyncio.sleep(1.0)  # the warm-up is stored; nothing else runs now
            before = threads(server.pid)
            await post_steadily(session, server.url, take(source, kills), rate)
            await asyncio.sleep(0.5)  # the last kill's commit
            return threads(server.pid) - before
    finally:
        server.stop()


def row(name: str, t: Threads, kills: int) -> str:
    ms = 1e3 / kills
    user, system = (t.loop_user + t.other_user) * ms, (t.loop_sys + t.other_sys) * ms
    loop, other = (t.loop_user + t.loop_sys) * ms, (t.other_user + t.other_sys) * ms
    cells = [user + system, user, system, loop, other]
    return f"| {name} | {' | '.join(f'{c:.2f}' for c in cells)} | {t.switches / kills:.0f} |"


async def compare(args: argparse.Namespace) -> dict[str, object]:
    compared = trees(args.baseline)
    print(f"load before: {' '.join(f'{x:.1f}' for x in load_average())}; {args.kills} kills at {args.rate}/s")
    print("\n| tree (round) | CPU-ms a kill | user | system | loop thread | other threads | voluntary switches |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    sums: dict[str, list[float]] = {}
    rows: list[dict[str, float | int | str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(args.rounds):
            for name, root in compared:
                t = await measure(root, args.kills, args.rate, args.warm, Path(tmp))
                print(row(f"{name} ({n + 1})", t, args.kills), flush=True)
                rows.append(
                    {"name": name, "round": n + 1, "kills": args.kills, "switches": t.switches}
                    | {k: getattr(t, k) for k in ("loop_user", "loop_sys", "other_user", "other_sys")}
                )
                sums.setdefault(name, []).append(
                    (t.loop_user + t.loop_sys + t.other_user + t.other_sys) * 1e3 / args.kills
                )
    print(f"\nload after: {' '.join(f'{x:.1f}' for x in load_average())}")
    for name, values in sums.items():
        print(f"{name}: mean {sum(values) / len(values):.2f} CPU-ms a kill ({', '.join(f'{v:.2f}' for v in values)})")
    if len(sums) == 2:
        mine, base = (sum(v) / len(v) for v in sums.values())
        print(f"ratio this tree / baseline: {mine / base:.2f}x")
    return {"rows": rows, "load": load_average()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--rate", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", default=None, help="another checkout (e.g. /work/main) to run the same way")
    parser.add_argument("--warm", action="store_true", help="post the bundled kills once before measuring")
    parser.add_argument("--json", default=None, help="write the figures to this file")
    args = parser.parse_args(argv)
    figures = asyncio.run(compare(args))
    if args.json is not None:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
