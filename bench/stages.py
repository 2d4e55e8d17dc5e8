"""Where a kill's ingest CPU goes, stage by stage, against the ingest floor in the same run.

    python -m bench.stages [--kills 6000] [--json FILE]

Runs each stage of what the server does for a POSTed kill over the real kills (bench.data), in
this process, a batch of 200 at a time as the server's worker takes them (one stage after
the other over the batch), and prints its process CPU (every thread,
SQLite's included) per kill, as a multiple of the floor of bench.ingest (parse the same JSON,
insert each kill raw with sqlite3) measured in the same run. The stages, as the server runs them:

- parse, validate: the POST body's JSON, `parse_submission`;
- inbox: the durable record before the 202 (`inbox_rows`, `Store.add_to_inbox` in batches);
- enrich: names, prices and flags (`enrich`);
- frame: the kill's JSON as subscribers get it (`frames.encode`);
- stored document: `source_document` and its packing (`Store.pack_source`);
- participants: `participation`, packed pilots (what the index and battles read);
- channel facts: `kill_facts` (what live channels match on);
- figures share: the entity figures' share of the kill (`figures.kill_share`, a preparer);
- write: `Store.save_kills` in batches with battles and entity figures attached (the kills,
  participants, index, figures and battles rows; the inbox rows deleted);
- deflate: the all-languages frame for one permessage-deflate subscriber, at the burst level (1)
  a catch-up uses and at the live feed's (6);
- garbage collector: its passes during the batches, with the server's thresholds (taken out
  of the stage that set each one off).

Their sum bounds the ingest ratio on one core: the floor over the sum. What is not counted
here (HTTP, the hops between the loop, the database thread and the worker process, delivery
to sockets) only adds to it. The figures of docs/performance-read-send.md come from here.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import ujson

from killboard.battles.service import Battles
from killboard.cli import GC_THRESHOLDS
from killboard.config import PROJECT_ROOT
from killboard.entities import backlog
from killboard.entities.figures import kill_share
from killboard.ingest.pipeline import build_kill
from killboard.ingest.queue import inbox_rows
from killboard.kill.enrich import enrich
from killboard.kill.frames import encode
from killboard.kill.prices import price_book
from killboard.kill.staticdata import load_static
from killboard.kill.topics import kill_facts
from killboard.kill.validate import parse_submission
from killboard.live.wire import deflate
from killboard.storage.participants import participation
from killboard.storage.rows import NewKill
from killboard.storage.store import Store

from .data import real_killmails
from .ingest import BATCH, bodies, run_floor
from .procstat import load_average

T = TypeVar("T")
U = TypeVar("U")


class Collections:
    """The process CPU the garbage collector's passes take (gc.callbacks), so that a stage is
    not charged for a pass that its allocations happened to set off: which stage that is moves
    with the batch, and the passes walk every live object, the other stages' included."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.process_time()
        else:
            self.seconds += time.process_time() - self._started


COLLECTIONS = Collections()


def _mark() -> tuple[float, float]:
    return time.process_time(), COLLECTIONS.seconds


def _since(mark: tuple[float, float]) -> float:
    """Process CPU seconds since `mark`, the collector's passes left out."""
    start, collected = mark
    return time.process_time() - start - (COLLECTIONS.seconds - collected)


def timed(fn: Callable[[T], U], items: Sequence[T]) -> tuple[list[U], float]:
    """(fn of each item, process CPU seconds it took, the collector's passes left out)."""
    mark = _mark()
    out = [fn(item) for item in items]
    return out, _since(mark)


async def timed_async(work: Callable[[], Awaitable[Any]]) -> float:
    """Process CPU seconds of awaiting `work()` (the store's thread included), the collector's
    passes left out."""
    mark = _mark()
    await work()
    return _since(mark)


async def measure(kills: int, workdir: Path) -> tuple[dict[str, float], float]:
    """({stage: CPU seconds for all the kills}, the floor's CPU seconds for them)."""
    payloads = bodies(real_killmails(), kills)
    static = load_static(PROJECT_ROOT / "data")
    prices = price_book(static)
    # As the server's start ends (cli.serve): what it loaded is kept out of the collector's passes.
    gc.collect()
    gc.freeze()
    cpu: defaultdict[str, float] = defaultdict(float)

    start = time.process_time()
    count, _ = run_floor(workdir, payloads)
    floor = time.process_time() - start
    assert count == kills

    store = await Store.open(workdir / f"stages-{time.monotonic_ns()}.sqlite3")
    try:
        battles = await Battles.start(store, static)
        backlog.attach(store, static)
        # A POST at a time, and its kills a batch at a time, as the server takes them: only one
        # POST's parsed kills and one batch's enriched kills, frames and rows are alive at once
        # (the server's queue holds the rest as bytes). Over all the kills at once, every stage
        # kept 6,000 kills' objects alive, and the collector's passes over them doubled
        # enrich's figure (120 µs a kill against 55-90).
        collected = COLLECTIONS.seconds
        for body in payloads:
            [items], seconds = timed(ujson.loads, [body])
            cpu["parse"] += seconds
            subs, seconds = timed(parse_submission, items)
            cpu["validate"] += seconds
            for i in range(0, len(subs), BATCH):
                await _batch(subs[i : i + BATCH], store, static, prices, cpu)
        cpu["garbage collector"] = COLLECTIONS.seconds - collected
        await battles.stop()
        # Every kill written, its inbox row gone, and the battles and figures kept with it.
        [(stored, waiting, counted)] = await store.query(
            "SELECT (SELECT count(*) FROM kills), (SELECT count(*) FROM inbox), (SELECT count(*) FROM entity_months)"
        )
        assert stored == kills and waiting == 0 and counted > 0, (stored, waiting, counted)
    finally:
        await store.close()
    return cpu, floor


async def _batch(subs: list[Any], store: Store, static: Any, prices: Any, cpu: defaultdict[str, float]) -> None:
    """Each stage over one batch, its CPU added to `cpu`."""
    cpu["inbox"] += await timed_async(lambda: store.add_to_inbox(inbox_rows(subs, "http", True)))
    enriched, seconds = timed(lambda sub: enrich(sub, static, {}, prices), subs)
    cpu["enrich"] += seconds
    frames, seconds = timed(encode, enriched)
    cpu["frame"] += seconds
    pairs = list(zip(subs, enriched, strict=True))
    # build_kill makes the stored document, packs it, and the participant rows: split below.
    new, both = timed(lambda p: build_kill(p[0], p[1], None, store.pack_source), pairs)
    _, participants = timed(lambda k: participation(k, packed=True), enriched)
    cpu["participants"] += participants
    cpu["stored document"] += max(0.0, both - participants)
    cpu["channel facts"] += timed(kill_facts, enriched)[1]

    def share(kill: NewKill) -> Any:
        assert kill.participation is not None  # build_kill made it
        return kill_share(kill.participation.pilots, kill.kill_time, kill.system_id, kill.total_value, static)

    shares, seconds = timed(share, new)
    cpu["figures share"] += seconds
    for kill, made in zip(new, shares, strict=True):
        kill.prepared[backlog.PREPARED] = made  # as the pipeline's preparer leaves it
    done = [k.killmail_id for k in new]
    cpu["write"] += await timed_async(lambda: store.save_kills(new, done=done))
    cpu["deflate, burst (1)"] += timed(lambda f: deflate(f, 1), frames)[1]
    cpu["deflate, live (6)"] += timed(lambda f: deflate(f, 6), frames)[1]


COUNTED = (
    "parse",
    "validate",
    "inbox",
    "enrich",
    "frame",
    "stored document",
    "participants",
    "channel facts",
    "figures share",
    "write",
    "deflate, burst (1)",
    "garbage collector",
)


def report(cpu: dict[str, float], floor: float, kills: int) -> dict[str, Any]:
    per = {name: seconds / kills * 1e6 for name, seconds in cpu.items()}
    floor_us = floor / kills * 1e6
    total = sum(per[name] for name in COUNTED)
    print(f"{kills:,} real kills (bench.data), one process; load {load_average()}")
    print("| stage | CPU µs a kill | × the floor |")
    print("|---|---:|---:|")
    for name, us in per.items():
        note = "" if name in COUNTED else " (not in the sum)"
        print(f"| {name}{note} | {us:.1f} | {us / floor_us:.2f} |")
    print(f"| **sum** | **{total:.1f}** | **{total / floor_us:.2f}** |")
    print(f"| the floor (parse + raw insert, bench.ingest) | {floor_us:.1f} | 1.00 |")
    print(f"On one core these stages allow at most {floor_us / total:.3f}x the floor (issue 21's target: 0.25x).")
    return {"kills": kills, "per_kill_us": per, "sum_us": total, "floor_us": floor_us, "bound": floor_us / total}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=6000)
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args(argv)
    gc.set_threshold(*GC_THRESHOLDS)  # the server's collections, not the default's every 700 objects
    gc.callbacks.append(COLLECTIONS)
    with tempfile.TemporaryDirectory() as tmp:
        cpu, floor = asyncio.run(measure(args.kills, Path(tmp)))
    figures = report(cpu, floor, args.kills)
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
