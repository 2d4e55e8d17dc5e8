"""Battles beside an import: `python -m bench.battles_beside [--baseline TREE]` (one run each).

A store, its battles service and the poll of other processes' commits (web/foreign.py) run in
this process as in the server; a real `python app.py import` of 10,000 kills (the three real
fights and the 82 real kills renumbered, one every 2 s before the largest fight, so all of them
are within the detector's memory) runs beside it. Printed: the event loop's worst stall (a 1 ms
probe) while the import runs and the detector folds its kills in, the kills folded, the longest
fold transaction and the seconds from the import's exit until the detector had every kill; and,
for comparison, what loading the detector from the database once takes (what a reload per poll
would cost); and what the look for other processes' kills adds to every batch's write when there
are none. `--baseline TREE` runs the same in that tree first (its killboard), alternating.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from killboard.battles import tables
from killboard.battles.detect import Detector
from killboard.battles.service import Battles
from killboard.cli import GC_THRESHOLDS, SWITCH_INTERVAL
from killboard.config import PROJECT_ROOT
from killboard.kill.staticdata import load_static
from killboard.storage.store import Store
from killboard.web.foreign import ForeignWrites

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from battlefights import fight, when

KILLS = 10_000
SPACING = 2  # seconds of kill time between two everyday kills


def kills() -> list[dict[str, Any]]:
    from bench.data import real_killmails, stream, take

    fights = [km for system in ("30002472", "30001155", "30004049") for km in fight(system)]
    start = int(min(when(k) for k in fight("30004049")))
    n = KILLS - len(fights)
    out = []
    for i, km in enumerate(take(stream(real_killmails()), n)):
        t = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start - (n - i) * SPACING))
        out.append({**km, "killmail_time": t})
    return fights + out


async def probe(stop: asyncio.Event, delays: list[float], late: list[tuple[float, float]]) -> None:
    while not stop.is_set():
        t = time.perf_counter()
        await asyncio.sleep(0.001)
        delays.append(delay := time.perf_counter() - t - 0.001)
        if delay > 0.02:
            late.append((t, time.perf_counter()))


async def measure(tree: Path) -> dict[str, Any]:
    static = load_static(PROJECT_ROOT / "data")
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "kb.sqlite3"
        source = Path(tmp) / "import.json"
        source.write_text(json.dumps(kills()))
        store = await Store.open(db)
        battles = await Battles.start(store, static)
        # As the server runs (cli.serve): its switch interval and collector thresholds, and what
        # the start made frozen out of the collector's scans.
        sys.setswitchinterval(SWITCH_INTERVAL)
        gc.set_threshold(*GC_THRESHOLDS)
        gc.collect()
        gc.freeze()
        folds: list[float] = []
        spans: list[tuple[float, float]] = []
        if hasattr(battles, "_catch_up"):
            catch_up = battles._catch_up

            def timed(conn: Any) -> Any:
                t = time.perf_counter()
                try:
                    return catch_up(conn)
                finally:
                    folds.append(time.perf_counter() - t)
                    spans.append((t, time.perf_counter()))

            battles._catch_up = timed  # type: ignore[method-assign,assignment]
        foreign = ForeignWrites(store, [battles.elsewhere])
        polling = asyncio.create_task(foreign.run())
        stop, delays, late = asyncio.Event(), list[float](), list[tuple[float, float]]()
        lag = asyncio.create_task(probe(stop, delays, late))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "app.py", "import", str(source), "--db", str(db), "--no-upstream",
            cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        started = time.perf_counter()
        assert await proc.wait() == 0
        import_s = time.perf_counter() - started
        exited = time.perf_counter()
        caught = getattr(battles, "caught", None)
        while caught is not None and battles.caught < KILLS and time.perf_counter() - exited < 60:
            await asyncio.sleep(0.01)
        behind_s = time.perf_counter() - exited
        await asyncio.sleep(0.5)  # polls after the import: nothing left to do
        stop.set()
        await lag
        polling.cancel()
        [(open_battles,)] = await store.query("SELECT count(*) FROM battles WHERE merged_into IS NULL")
        t = time.perf_counter()
        await store.transact(lambda conn: tables.load(conn, Detector(), static))
        load_s = time.perf_counter() - t
        idle_us = await idle_read(store, battles) if hasattr(battles, "_catch_up") else None
        fresh = Detector()
        await store.transact(lambda conn: tables.load(conn, fresh, static))
        delays.sort()
        out = {
            "import_s": import_s,
            "stall_ms": delays[-1] * 1e3,
            "p99_ms": delays[len(delays) * 99 // 100] * 1e3,
            "over_20ms": len(late),
            # Of those, the ones that overlapped a fold (the rest: the machine, the import, SQLite).
            "over_20ms_in_fold": sum(any(a < e and s < b for s, e in spans) for a, b in late),
            "probes": len(delays),
            "folded": getattr(battles, "caught", 0),
            "folds": len(folds),
            "longest_fold_ms": max(folds, default=0) * 1e3,
            "behind_s": behind_s if caught is not None else None,
            "in_memory": len(battles.detector.battles),
            # Memory after the folds holds what a load from the database gives (ids and counts).
            "as_loaded": {b: x.kill_count for b, x in battles.detector.battles.items()}
            == {b: x.kill_count for b, x in fresh.battles.items()},
            "open_battles": open_battles,
            "load_s": load_s,
            "idle_fold_us": idle_us,
        }
        await battles.stop()
        await store.close()
        return out


async def idle_read(store: Store, battles: Battles, rounds: int = 2000) -> float:
    """Microseconds a batch's write spends looking for other processes' kills when there are none
    (the range read `Battles.write` makes before every batch)."""
    from killboard.battles import catchup

    def run(conn: Any) -> float:
        [(top,)] = conn.execute("SELECT max(seq) FROM kills").fetchall()
        t = time.perf_counter()
        for _ in range(rounds):
            catchup.fold(conn, battles.detector, battles.static, top, before=top + 1)
        return (time.perf_counter() - t) / rounds * 1e6

    return await store.transact(run)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", type=Path, help="another checkout to measure first, alternating")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(measure(Path.cwd()))))
        return
    trees = ([args.baseline] if args.baseline else []) + [PROJECT_ROOT]
    print(f"load average {os.getloadavg()[0]:.1f}; {KILLS} kills imported beside a server's battles")
    for tree in trees:
        done = subprocess.run(
            [sys.executable, __file__, "--child"],
            cwd=tree,
            env={**os.environ, "PYTHONPATH": str(tree)},
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{tree}: {json.dumps(r)}")
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
