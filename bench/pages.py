"""What the feed page and /health cost with many kills stored: server CPU per request.

    python bench/pages.py                   # 30,000 kills
    python bench/pages.py --kills 5000      # quicker

Stores copies of the 82 real kills under new ids (as tests/killgen.py does), starts the real
app in this process and times `/`, two filtered pages and /health by the process's CPU time
(the app and its database threads), each the median of a few requests after one warm-up.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiohttp.test_utils import TestClient, TestServer  # noqa: E402

from killboard.config import Config  # noqa: E402
from killboard.enrich import enrich  # noqa: E402
from killboard.pipeline import build_kill  # noqa: E402
from killboard.prices import price_book  # noqa: E402
from killboard.server import create_app  # noqa: E402
from killboard.staticdata import load_static  # noqa: E402
from killboard.store import NewKill, Store  # noqa: E402
from killboard.validate import Submission, parse_submission  # noqa: E402


async def fill(db: Path, count: int) -> dict[str, int]:
    """`count` stored kills; returns a rare and a common system id among them."""
    static = load_static(ROOT / "data")
    prices = price_book(static)
    files = sorted((ROOT / "tests" / "data" / "killmails").glob("[0-9]*.json"), key=lambda p: int(p.stem))
    subs = [parse_submission(json.loads(p.read_text())) for p in files]
    enriched = [enrich(s, static, {}, prices) for s in subs]
    store = await Store.open(db)
    now = int(time.time())
    try:
        for start in range(0, count, 500):
            batch = []
            for n in range(start, min(count, start + 500)):
                sub, kill = subs[n % len(subs)], enriched[n % len(subs)]
                new = build_kill(Submission(10**10 + n, sub.killmail_hash, sub.esi, sub.zkb), kill)
                batch.append(NewKill(new.killmail_id, new.killmail_hash, now, new.system_id, 0.0, b"", new.source))
            await store.save_kills(batch)
    finally:
        await store.close()
    # The oldest real kill's system: one kill in 82, so a page of 50 looks far back for it.
    return {"system": int(enriched[0]["system_id"])}


async def measure(db: Path, paths: list[str], rounds: int) -> dict[str, float]:
    config = Config(db_path=db, ingest_token=None, live_max_age=0, upstream=False)
    out: dict[str, float] = {}
    async with TestClient(TestServer(create_app(config))) as client:
        for path in paths:
            times = []
            for n in range(rounds + 1):
                cpu = time.process_time()
                resp = await client.get(path)
                assert resp.status == 200, (path, resp.status, await resp.text())
                await resp.read()
                if n:  # the first request warms caches
                    times.append(time.process_time() - cpu)
            out[path] = statistics.median(times)
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "kb.sqlite3"
        started = time.perf_counter()
        ids = await fill(db, args.kills)
        print(f"stored {args.kills} kills in {time.perf_counter() - started:.1f} s")
        paths = ["/health", "/", "/?sec=lowsec&solo=1", f"/?system={ids['system']}", "/?class=titans"]
        for path, cpu in (await measure(db, paths, args.rounds)).items():
            print(f"{path:28} {cpu * 1e3:8.1f} ms CPU")


if __name__ == "__main__":
    asyncio.run(main())
