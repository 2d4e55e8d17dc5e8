"""Bytes on disk per stored kill, for the stored forms we considered, and the time to serve the
latest 50 through the real app. The storage figures of docs/storage.md come from here.

    python bench/storage.py                 # 82 real kills + a synthetic month (15,000/day x 30)
    python bench/storage.py --days 1        # quicker

The synthetic month repeats the odd-numbered real kills with new ids and kill times and a zkb
block shaped like R2Z2's; the dictionary it is packed with is trained on the even-numbered kills
only, so the month measures kills the dictionary has never seen (as real traffic will be).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiohttp.test_utils import TestClient, TestServer  # noqa: E402

from killboard.config import Config  # noqa: E402
from killboard.entities import backlog  # noqa: E402
from killboard.ingest.pipeline import build_kill  # noqa: E402
from killboard.kill import codec  # noqa: E402
from killboard.kill.enrich import enrich  # noqa: E402
from killboard.kill.frames import encode  # noqa: E402
from killboard.kill.prices import price_book  # noqa: E402
from killboard.kill.staticdata import load_static  # noqa: E402
from killboard.kill.validate import Submission, parse_submission  # noqa: E402
from killboard.server import create_app  # noqa: E402
from killboard.storage.rows import NewKill  # noqa: E402
from killboard.storage.store import Store  # noqa: E402

DAY = 86_400


def wal_size(path: Path) -> int:
    wal = Path(f"{path}-wal")
    return wal.stat().st_size if wal.exists() else 0


def on_disk(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def load_subs() -> list[Submission]:
    files = sorted((ROOT / "tests" / "data" / "killmails").glob("[0-9]*.json"), key=lambda p: int(p.stem))
    return [parse_submission(json.loads(p.read_text())) for p in files]


def with_zkb(sub: Submission, kill: dict[str, Any], kill_id: int, when: int) -> Submission:
    esi = {
        **(sub.esi or {}),
        "killmail_id": kill_id,
        "killmail_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when)),
    }
    zkb = {
        "locationID": 40000000 + kill_id % 100000,
        "hash": sub.killmail_hash,
        "fittedValue": round(kill["fitting_value"], 2),
        "droppedValue": round(kill["dropped_value"], 2),
        "destroyedValue": round(kill["destroyed_value"], 2),
        "totalValue": round(kill["total_value"], 2),
        "points": 1 + kill_id % 30,
        "npc": kill["is_npc"],
        "solo": kill["is_solo"],
        "awox": kill["is_awox"],
        "labels": ["tz:eu", "cat:6", "pvp", f"loc:{kill['security_class']}"],
        "attackerCount": kill["attacker_count"],
        "href": f"https://esi.evetech.net/killmails/{kill_id}/{sub.killmail_hash}/",
    }
    return Submission(kill_id, sub.killmail_hash, esi, zkb)


def table_bytes(path: Path) -> list[tuple[str, int]]:
    """Bytes of each table and index (SQLite's dbstat), largest first."""
    import sqlite3

    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC").fetchall()
    finally:
        db.close()


async def fill(store: Store, kills: list[NewKill], batch: int = 200) -> int:
    """Store in batches as the worker does; returns the largest WAL seen."""
    peak = 0
    for i in range(0, len(kills), batch):
        await store.save_kills(kills[i : i + batch])
        if i % (batch * 50) == 0:
            peak = max(peak, wal_size(store.path))
    await store.checkpoint()
    return peak


async def serve_latest(db: Path, runs: int = 20) -> tuple[float, int]:
    """Median time of GET /api/killmails?limit=50 through the real app, and the response size."""
    app = create_app(Config(db_path=db, live_max_age=0, upstream=False))
    async with TestClient(TestServer(app)) as client:
        times, size = [], 0
        for _ in range(runs):
            t = time.perf_counter()
            resp = await client.get("/api/killmails?limit=50")
            body = await resp.read()
            times.append(time.perf_counter() - t)
            size = len(body)
            assert resp.status == 200
    return statistics.median(times), size


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--per-day", type=int, default=15_000)
    args = ap.parse_args()
    static = load_static(ROOT / "data")
    prices = price_book(static)
    subs = load_subs()
    enriched = [enrich(s, static, {}, prices) for s in subs]
    bodies = [encode(k) for k in enriched]
    sources = [
        codec.source_document(s.esi or {}, s.zkb, codec.kill_prices(k)) for s, k in zip(subs, enriched, strict=True)
    ]
    train, held_out = sources[0::2], sources[1::2]
    held_dict = codec.build_dictionary(train)
    enriched_dict = codec.build_dictionary(bodies[0::2])

    def avg(xs: list[int]) -> float:
        return sum(xs) / len(xs)

    print(
        f"82 real kills: enriched JSON {avg([len(b) for b in bodies]):.0f} B,"
        f" source {avg([len(s) for s in sources]):.0f} B"
    )
    print("stored blob, average bytes (held-out half for dictionary rows):")
    print(f"  enriched, zlib 6 (schema 1)       {avg([len(zlib.compress(b, 6)) for b in bodies]):7.0f}")
    print(f"  enriched, deflate + dictionary    {avg([len(codec.pack(b, enriched_dict)) for b in bodies[1::2]]):7.0f}")
    print(f"  source, zlib 6                    {avg([len(zlib.compress(s, 6)) for s in held_out]):7.0f}")
    print(f"  source, deflate + dictionary      {avg([len(codec.pack(s, held_dict)) for s in held_out]):7.0f}")

    t = time.perf_counter()
    for _ in range(5):
        for sub in subs:
            encode(enrich(sub, static, {}, prices))
    print(f"render on read (enrich + encode): {(time.perf_counter() - t) / (5 * len(subs)) * 1000:.3f} ms/kill")

    with tempfile.TemporaryDirectory() as tmp:
        # The 82 real kills, both forms, through the real Store (shipped dictionary).
        for name, keep_source in (("enriched zlib (schema 1)", False), ("source + dictionary", True)):
            db = Path(tmp) / f"real-{keep_source}.sqlite3"
            store = await Store.open(db)
            kills = [build_kill(s, k) for s, k in zip(subs, enriched, strict=True)]
            if not keep_source:
                kills = [
                    NewKill(k.killmail_id, k.killmail_hash, k.kill_time, k.system_id, k.total_value, k.body)
                    for k in kills
                ]
            await fill(store, kills)
            await store.close()
            median, _ = await serve_latest(db)
            print(
                f"82 real kills, {name}: {on_disk(db) / len(kills):.0f} B/kill on disk (database + WAL);"
                f" GET latest 50: median {median * 1000:.1f} ms"
            )

        # The synthetic month, held-out dictionary.
        codec.load_dictionary = lambda path=codec.DICTIONARY_PATH: held_dict
        base = [(s, k) for s, k in zip(subs, enriched, strict=True)][1::2]
        total = args.days * args.per_day
        start = int(time.time()) - args.days * DAY
        db = Path(tmp) / "month.sqlite3"
        store = await Store.open(db)
        backlog.attach(store, static)  # the entity figures, as the server and imports keep them
        t = time.perf_counter()
        peak = 0
        chunk: list[NewKill] = []
        for n in range(total):
            sub, kill = base[n % len(base)]
            kill_id = 200_000_000 + n
            when = start + n * args.days * DAY // total
            shifted = with_zkb(sub, kill, kill_id, when)
            chunk.append(
                NewKill(
                    kill_id,
                    sub.killmail_hash,
                    when,
                    kill["system_id"],
                    kill["total_value"],
                    b"",
                    codec.source_document(shifted.esi or {}, shifted.zkb, codec.kill_prices(kill)),
                )
            )
            if len(chunk) == 10_000:
                peak = max(peak, await fill(store, chunk))
                chunk = []
        if chunk:
            peak = max(peak, await fill(store, chunk))
        elapsed = time.perf_counter() - t
        await store.close()
        size = on_disk(db)
        print(
            f"synthetic {args.days} days x {args.per_day}/day = {total} kills: {size / total:.0f} B/kill on disk, "
            f"{size / 2**20:.0f} MiB; largest WAL seen {peak / 2**20:.1f} MiB; stored at {total / elapsed:.0f} kills/s"
        )
        print(f"  a year at this rate: {size / total * args.per_day * 365 / 2**30:.1f} GiB")
        print("  by table and index, B/kill: " + ", ".join(f"{name} {b / total:.0f}" for name, b in table_bytes(db)))
        median, resp_size = await serve_latest(db)
        print(
            f"GET /api/killmails?limit=50 over that database: median {median * 1000:.1f} ms"
            f" ({resp_size / 1024:.0f} KiB)"
        )


if __name__ == "__main__":
    asyncio.run(main())
