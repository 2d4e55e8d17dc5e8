"""What the feed page and /health cost with many kills stored, and /health during large reads.

    python bench/pages.py                   # 30,000 kills, then 48 reads of 500 at once
    python bench/pages.py --kills 5000      # quicker
    python bench/pages.py --baseline /work/main --reads 0   # views: this tree and a baseline side by side
    python bench/pages.py --kills 20000 --stalls --baseline /work/main --reads 0   # first views' loop stalls

Stores copies of the 82 real kills under new ids (as tests/killgen.py does), starts the real
app in this process and times `/`, filtered pages and /health by the process's CPU time (the
app and its database threads), each the median of a few requests after the first (which, for
a filtered page, learns the keys of the newest 1,000 kills: shown on its own line). Then the
real server runs as a subprocess and /health is timed while `--reads` concurrent
`GET /api/killmails?limit=500` run, with the server's peak RSS.

With `--baseline DIR` (another checkout, e.g. main before a change), bench/pageviews.py runs
once per tree on the same database: CPU per view (first and kept), views per CPU-second (one
core), in English and German, as a table with the ratio; for the feed's pages, and for the
battle and entity pages and their JSON (battles and entity figures are rebuilt after the fill,
as a server that stored the kills would have them).

With `--stalls`, the real server (`app.py`, of this tree and of `--baseline`, one after the other
on the same database) is asked each page's first view while another process pings it over a
WebSocket every 5 ms (bench/bigkill.py's probe: aiohttp answers a ping on the loop itself): the
longest ping -> pong during the view is the loop's stall; then a kill joins the median battle
and its page, its JSON and the lists are viewed again (the first view after a change). Then, on
a fresh start, 8 views at once of the battle's page: the first and the last answer, and the
longest pong.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from aiohttp.test_utils import TestClient, TestServer  # noqa: E402

from killboard.battles.service import rebuild as battles_rebuild  # noqa: E402
from killboard.config import Config  # noqa: E402
from killboard.entities.backlog import rebuild as entities_rebuild  # noqa: E402
from killboard.ingest.pipeline import build_kill  # noqa: E402
from killboard.kill.enrich import enrich  # noqa: E402
from killboard.kill.prices import price_book  # noqa: E402
from killboard.kill.staticdata import load_static  # noqa: E402
from killboard.kill.validate import Submission, parse_submission  # noqa: E402
from killboard.server import create_app  # noqa: E402
from killboard.storage.rows import NewKill  # noqa: E402
from killboard.storage.store import Store  # noqa: E402


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
        # Battles and entity figures, as a server that stored these kills would have them.
        await battles_rebuild(store, static)
        await entities_rebuild(store, static)
        [(battle,)] = await store.query(
            "SELECT battle_id FROM battles WHERE merged_into IS NULL ORDER BY kill_count, battle_id LIMIT 1"
            " OFFSET (SELECT count(*) / 2 FROM battles WHERE merged_into IS NULL)"
        )
        [(battle_kill, battle_time)] = await store.query(
            "SELECT min(k.killmail_id), min(k.kill_time) FROM battle_kills b JOIN kills k USING (seq)"
            " WHERE b.battle_id = ?",
            (battle,),
        )
    finally:
        await store.close()
    # The oldest real kill's system: one kill in 82, so a page of 50 looks far back for it.
    victim = enriched[0]["victim"]
    return {
        "system": int(enriched[0]["system_id"]),
        "battle": int(battle),  # the median battle by kills
        "character": int(victim["character_id"]),  # one kill in 82: ~240 of 20,000
        "ship": int(victim["ship_id"]),
        "battle_kill": (int(battle_kill) - 10**10) % len(subs),  # a real kill that joins that battle again
        "battle_time": int(battle_time),  # (the fill stored every copy at the time of the fill)
    }


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
                if n:
                    times.append(time.process_time() - cpu)
                elif path.startswith("/?"):
                    out.setdefault("first filtered page (learns the keys)", time.process_time() - cpu)
            out[path] = statistics.median(times)
    return out


def peak_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


async def health_under_reads(db: Path, reads: int) -> None:
    """/health latency while `reads` concurrent limit=500 reads run against a server process."""
    from bench.server import Server

    server = Server(db)
    await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(server.url + "/api/killmails?limit=500") as r:
                size = len(await r.read())
            before = peak_rss(server.pid)

            async def big_read() -> int:
                async with session.get(server.url + "/api/killmails?limit=500") as r:
                    await r.read()
                    return r.status

            started = time.monotonic()
            tasks = [asyncio.create_task(big_read()) for _ in range(reads)]
            latencies = []
            while not all(t.done() for t in tasks):
                sent = time.monotonic()
                async with session.get(server.url + "/health") as r:
                    await r.read()
                latencies.append(time.monotonic() - sent)
                await asyncio.sleep(0.05)
            statuses = [t.result() for t in tasks]
            took = time.monotonic() - started
        latencies.sort()
        print(
            f"{reads} reads of {size / 2**20:.1f} MiB at once: {statuses.count(200)} x 200,"
            f" {statuses.count(503)} x 503 in {took:.1f} s; peak RSS +{(peak_rss(server.pid) - before) / 2**20:.0f} MB;"
            f" /health median {statistics.median(latencies) * 1e3:.0f} ms, max {latencies[-1] * 1e3:.0f} ms"
            f" ({len(latencies)} calls)"
        )
    finally:
        server.stop()


def views(tree: Path, db: Path, paths: list[str], lang: str, seconds: float) -> dict[str, Any]:
    """bench/pageviews.py for one tree, in its own process (it imports that tree's killboard)."""
    command = [sys.executable, str(ROOT / "bench" / "pageviews.py"), "--tree", str(tree), "--db", str(db)]
    command += ["--seconds", str(seconds)]
    done = subprocess.run([*command, "--lang", lang, *paths], capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{tree}: {done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def compare(baseline: Path, db: Path, paths: list[str], seconds: float) -> None:
    print(f"{'path':46} {'lang':4} {'tree':8} {'1st ms':>8} {'kept ms':>8} {'views/CPU-s':>12}")
    for lang in ("en", "de"):
        got = {name: views(tree, db, paths, lang, seconds) for name, tree in (("baseline", baseline), ("this", ROOT))}
        for path in paths:
            for name in ("baseline", "this"):
                r = got[name][path]
                cost = f"{r['first_ms']:8.1f} {r['median_ms']:8.2f} {r['views_per_cpu_s']:12.0f}"
                print(f"{path:46} {lang:4} {name:8} {cost}")
            ratio = got["this"][path]["views_per_cpu_s"] / got["baseline"][path]["views_per_cpu_s"]
            print(f"{'':46} {lang:4} {'ratio':8} {'':8} {'':8} {ratio:11.1f}x")
        for name in ("baseline", "this"):
            first, learned = got[name]["first filtered page (ms wall)"], got[name]["keys learned after (s)"]
            cpu = got[name].get("first filtered page (ms CPU)", 0.0)
            when = (
                f"keys learned in the background {learned:.1f} s after start" if learned else "no background learning"
            )
            print(f"first filtered page, {lang}, {name}: {first:.0f} ms wall, {cpu:.0f} ms CPU ({when})")


async def first_view(session: aiohttp.ClientSession, url: str, path: str) -> tuple[float, float, float]:
    """(the view ms wall, the next view ms wall, the longest ping -> pong ms during them)."""
    from bench.bigkill import PING_PROBE, probe

    pings = asyncio.create_task(probe(url, 1.5, PING_PROBE))
    await asyncio.sleep(0.4)  # the probe is connected and pinging
    walls = []
    for _ in range(2):
        started = time.perf_counter()
        async with session.get(url + path) as resp:
            assert resp.status == 200, (path, resp.status)
            await resp.read()
        walls.append((time.perf_counter() - started) * 1e3)
    return walls[0], walls[1], (await pings)[0] * 1e3


async def first_views(
    tree: Path, db: Path, paths: list[str], crowd: str | None = None, change: dict[str, Any] | None = None
) -> dict[str, tuple[float, float, float]]:
    """path -> (first view ms wall, kept view ms wall, longest ping -> pong ms during the first);
    with `crowd`, only 8 views at once of that page: (the first answer, the last, longest pong);
    with `change`, that kill posted after the views, then the first four paths viewed again."""
    from bench.bigkill import PING_PROBE, probe
    from bench.fanout import post_one
    from bench.server import Server

    server = Server(db, root=tree)
    await server.start()
    out: dict[str, tuple[float, float, float]] = {}
    try:
        await asyncio.sleep(3)  # the keys and templates learned in the background at start
        async with aiohttp.ClientSession() as session:
            floor = asyncio.create_task(probe(server.url, 1.5, PING_PROBE))
            out["(no view: the probe's floor)"] = (0.0, 0.0, (await floor)[0] * 1e3)
            for path in paths:
                out[path] = await first_view(session, server.url, path)
            if change is not None:
                # A new kill joins the battle: its page, its JSON and the lists are rendered again.
                await post_one(session, server.url, change)
                await asyncio.sleep(1.0)  # stored, and in the battle
                for path in paths[:4]:
                    out[f"after a kill: {path}"] = await first_view(session, server.url, path)
            # A link on a forum: 8 readers at once on a page nobody viewed since the start.
            if crowd is not None:
                pings = asyncio.create_task(probe(server.url, 1.5, PING_PROBE))
                await asyncio.sleep(0.4)
                started = time.perf_counter()

                async def view() -> float:
                    async with session.get(server.url + crowd) as resp:
                        assert resp.status == 200, (crowd, resp.status)
                        await resp.read()
                    return (time.perf_counter() - started) * 1e3

                walls = sorted(await asyncio.gather(*(view() for _ in range(8))))
                out[f"8 at once: {crowd}"] = (walls[0], walls[-1], (await pings)[0] * 1e3)
    finally:
        server.stop()
    return out


def fresh(db: Path, name: str) -> Path:
    """A copy of the filled database (without a WAL a former server left beside the copy)."""
    copy = db.with_name(f"{name}.sqlite3")
    for leftover in (copy.with_name(copy.name + "-wal"), copy.with_name(copy.name + "-shm")):
        leftover.unlink(missing_ok=True)
    shutil.copyfile(db, copy)
    return copy


def stalls(baseline: Path | None, db: Path, paths: list[str], change: dict[str, Any]) -> None:
    load = os.getloadavg()[0]
    trees = ([("baseline", baseline)] if baseline else []) + [("this", ROOT)]
    got = {}
    for name, tree in trees:
        # A copy of the database each: the first tree's start must not warm the second's pages.
        got[name] = asyncio.run(first_views(tree, fresh(db, name), paths, change=change))
        # A fresh start again: nobody viewed the crowd's page yet.
        got[name].update(asyncio.run(first_views(tree, fresh(db, name), [], paths[1])))
    print(f"first views, load {load:.1f} -> {os.getloadavg()[0]:.1f}")
    print(f"{'path':46} {'tree':8} {'1st ms':>8} {'kept ms':>8} {'longest pong ms':>16}")
    for path in got["this"]:
        for name, _ in trees:
            first, kept, pong = got[name][path]
            print(f"{path:46} {name:8} {first:8.1f} {kept:8.1f} {pong:16.1f}")


def others(ids: dict[str, int]) -> list[str]:
    """The battle and entity pages and their JSON."""
    character, battle = ids["character"], ids["battle"]
    return [
        "/battles",
        f"/battle/{battle}",
        "/api/battles",
        f"/api/battles/{battle}",
        f"/character/{character}",
        f"/api/character/{character}",
        f"/api/character/{character}/kills?limit=50",
        f"/ship/{ids['ship']}",
        f"/system/{ids['system']}",
    ]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reads", type=int, default=48)
    parser.add_argument("--baseline", type=Path, help="another checkout to compare page views with")
    parser.add_argument("--seconds", type=float, default=3.0, help="views of one page repeated this long")
    parser.add_argument("--stalls", action="store_true", help="the loop's longest stall during first views")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "kb.sqlite3"
        started = time.perf_counter()
        ids = await fill(db, args.kills)
        print(f"stored {args.kills} kills in {time.perf_counter() - started:.1f} s")
        paths = ["/health", "/", "/?sec=lowsec&solo=1", f"/?system={ids['system']}", "/?class=titans"]
        if args.stalls:
            from bench.data import real_killmails

            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ids["battle_time"]))
            change = {**real_killmails()[ids["battle_kill"]], "killmail_id": 10**10 + 10**8, "killmail_time": when}
            await asyncio.to_thread(stalls, args.baseline, db, [*others(ids), *paths[1:]], change)
            return
        if args.baseline:
            compare(args.baseline, db, paths[1:] + others(ids), args.seconds)
            if not args.reads:
                return
        for path, cpu in (await measure(db, paths, args.rounds)).items():
            print(f"{path:38} {cpu * 1e3:8.1f} ms CPU")
        if args.reads:
            await health_under_reads(db, args.reads)


if __name__ == "__main__":
    asyncio.run(main())
