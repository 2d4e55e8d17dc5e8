"""`python app.py import` of a backlog file, timed against another checkout in the same sitting.

    python -m bench.importrate [--kills 5000] [--rounds 2] [--baseline DIR] [--battles]

Writes N real kills (tests/data, renumbered) as one .jsonl, then runs `app.py import
--no-upstream` on it into a new database, alternating this tree and `--baseline` (e.g. /work/main),
and prints each run's kills/s (process start to exit), CPU seconds per 1,000 kills (the import
process and the worker process it waited for: wait4's rusage counts both), and the load average.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import ujson

from killboard.config import PROJECT_ROOT

from .data import real_killmails, stream, take
from .ingest import run_import


def write_backlog(path: Path, kills: int) -> None:
    with path.open("wb") as f:
        for km in take(stream(real_killmails()), kills):
            f.write(ujson.dumps(km).encode() + b"\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--baseline", type=Path, help="another checkout, run alternately with this one")
    args = parser.parse_args()
    trees = [("this", PROJECT_ROOT)] + ([("baseline", args.baseline.resolve())] if args.baseline else [])
    with tempfile.TemporaryDirectory(prefix="kb-importrate-") as tmp:
        workdir = Path(tmp)
        backlog = workdir / "backlog.jsonl"
        write_backlog(backlog, args.kills)
        print(f"{args.kills} kills, {backlog.stat().st_size / 1e6:.1f} MB of JSON lines, {os.cpu_count()} cores")
        for n in range(args.rounds):
            for name, tree in trees:
                done = run_import(workdir, backlog, args.kills, tree)
                seconds, cpu, stored = done.seconds, done.cpu, done.stored
                load = os.getloadavg()[0]
                print(
                    f"round {n + 1} {name:8s} {args.kills / seconds:7.0f} kills/s  {seconds:6.2f} s  "
                    f"{cpu / args.kills * 1000:5.2f} CPU-s/1000  stored {stored}  load {load:.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
