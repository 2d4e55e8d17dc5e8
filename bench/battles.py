"""Battles: `python -m bench.battles` (one run; see docs/battles.md for the figures).

1. Detection per ingested kill against the ingest floor (parse + raw sqlite3 insert, bench/ingest.py),
   as a ratio in one run: what the store's battles writer adds to each kill (its detection point,
   the detector, and the battle rows in the kills' transaction).
2. A full recompute of battles of 100, 1,000 and 2,000 kills (the live frame's summary with its
   sides, and `battles rebuild`), with the worst event-loop stall a 1 ms probe saw meanwhile.

The real fights (tests/data/battles) are the battles; the 82 real kills, renumbered and spread
over time, are the everyday traffic around them. Battles larger than the real 458-kill fight are
that fight's kills again under fresh ids, spread over its own time span.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from killboard.battles import tables
from killboard.battles.detect import Changes, Detector
from killboard.battles.service import Battles, rebuild
from killboard.config import PROJECT_ROOT
from killboard.ingest.pipeline import build_kill
from killboard.kill.enrich import enrich
from killboard.kill.prices import price_book
from killboard.kill.staticdata import StaticData, load_static
from killboard.kill.validate import parse_submission
from killboard.storage.rows import NewKill
from killboard.storage.store import Store

from .data import STRIDE, real_killmails, stream, take
from .ingest import POST_BATCH, run_floor

sys.path.insert(0, str(PROJECT_ROOT / "tests"))
from battlefights import fight

BATCH = 200  # the worker's batch
EVERYDAY = 4205  # + the 795 fight kills: 5,000 kills
SIZES = (100, 1000, 2000)


def _time(km: dict[str, Any]) -> str:
    return km["killmail_time"]


def everyday(count: int) -> list[dict[str, Any]]:
    """The real kills renumbered, one every 17 s (about a day's rate), each in its own system."""
    base = 1_800_000_000
    out = []
    for i, km in enumerate(take(stream(real_killmails()), count)):
        t = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(base + i * 17))
        out.append({**km, "killmail_time": t})
    return out


def new_kills(kms: list[dict[str, Any]], static: StaticData) -> list[NewKill]:
    prices = price_book(static)
    out = []
    for km in kms:
        sub = parse_submission(km)
        out.append(build_kill(sub, enrich(sub, static, {}, prices)))
    return out


async def detection(workdir: Path, kills: list[NewKill], static: StaticData) -> tuple[float, float]:
    """(wall, CPU) seconds the battles writer spends on these kills (in batches, in a real
    transaction). CPU time counts every thread of the process (the database's too) and not the
    other processes of a shared machine."""
    store = await Store.open(workdir / f"detect-{time.monotonic_ns()}.sqlite3")
    try:
        detector = Detector()
        spent = cpu = 0.0

        def detect(db: sqlite3.Connection, batch: Sequence[NewKill], first: int) -> None:
            # As the battles writer runs: in the kills' write transaction, in the database thread.
            changes = Changes()
            for seq, kill in enumerate(batch, first):
                pilots = kill.participation.pilots if kill.participation else ()
                p = tables.point(seq, kill.kill_time, kill.system_id, kill.total_value, pilots, static)
                detector.add((p,), changes)
            if changes:
                tables.write(db, detector, changes)

        for i in range(0, len(kills), BATCH):
            start, cpu0 = time.perf_counter(), time.process_time()
            await store.transact(partial(detect, batch=kills[i : i + BATCH], first=i + 1))
            spent += time.perf_counter() - start
            cpu += time.process_time() - cpu0
        return spent, cpu
    finally:
        await store.close()


def spread(kms: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """`count` kills of one fight: its kills again under fresh ids, over its own time span."""
    out: list[dict[str, Any]] = []
    n = 0
    while len(out) < count:
        for km in kms:
            if len(out) == count:
                break
            out.append({**km, "killmail_id": km["killmail_id"] + n * STRIDE})
        n += 1
    return out


async def probe(stop: asyncio.Event) -> float:
    worst = 0.0
    while not stop.is_set():
        t = time.perf_counter()
        await asyncio.sleep(0.001)
        worst = max(worst, time.perf_counter() - t - 0.001)
    return worst


async def stalled(work: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    """(seconds, worst loop stall in seconds) of `work` with the probe running beside it."""
    stop = asyncio.Event()
    lag = asyncio.create_task(probe(stop))
    await asyncio.sleep(0.01)
    start = time.perf_counter()
    await work()
    took = time.perf_counter() - start
    stop.set()
    return took, await lag


async def recompute(workdir: Path, size: int, static: StaticData) -> dict[str, float]:
    kms = spread(sorted(fight("30004049"), key=_time), size)
    kills = new_kills(kms, static)
    store = await Store.open(workdir / f"recompute-{size}.sqlite3")
    try:
        service = await Battles.start(store, static)
        for i in range(0, len(kills), BATCH):
            await store.save_kills(kills[i : i + BATCH])
        [row] = await tables.listing(store, 10)
        assert row.kill_count == size, row

        async def summarize() -> None:
            service._cache.clear()
            await service.summarize(row)

        summary_s, summary_stall = await stalled(summarize)
        rebuild_s, rebuild_stall = await stalled(lambda: rebuild(store, static))
        await service.stop()
        return {
            "kills": size,
            "summary_s": summary_s,
            "summary_stall_ms": summary_stall * 1e3,
            "rebuild_s": rebuild_s,
            "rebuild_stall_ms": rebuild_stall * 1e3,
        }
    finally:
        await store.close()


async def main() -> None:
    static = load_static(PROJECT_ROOT / "data")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        fights = [km for system in ("30002472", "30001155", "30004049") for km in sorted(fight(system), key=_time)]
        kms = fights + everyday(EVERYDAY)
        payloads = [json.dumps(kms[i : i + POST_BATCH]).encode() for i in range(0, len(kms), POST_BATCH)]
        cpu0 = time.process_time()
        count, floor_s = run_floor(workdir, payloads)
        floor_cpu = time.process_time() - cpu0
        kills = new_kills(kms, static)
        detect_s, detect_cpu = await detection(workdir, kills, static)
        us = 1e6 / count
        print(f"detection: {count} kills ({len(fights)} in battles)")
        for what, floor, spent in (("wall", floor_s, detect_s), ("CPU ", floor_cpu, detect_cpu)):
            print(f"  {what}: floor {floor * us:.1f} us/kill, battles {spent * us:.2f} us/kill: {spent / floor:.3f}x")
        print(f"{'kills':>6}  {'summary s':>9}  {'stall ms':>8}  {'rebuild s':>9}  {'stall ms':>8}")
        for size in SIZES:
            r = await recompute(workdir, size, static)
            print(
                f"{r['kills']:>6}  {r['summary_s']:>9.3f}  {r['summary_stall_ms']:>8.1f}"
                f"  {r['rebuild_s']:>9.3f}  {r['rebuild_stall_ms']:>8.1f}"
            )


if __name__ == "__main__":
    asyncio.run(main())
