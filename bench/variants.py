"""Variant amplification (issue 22): `python -m bench.variants`.

254 sockets, each asking for another subset of the eight languages (`?lang=`), and one real
3,000-attacker kill (bench/data.py's fleet fight: the biggest real kill, its attackers repeated).
Against the same kill sent to 254 sockets that all ask for English: the server's CPU for the
kill (from the POST until every socket has its frame) and the longest /health wait meanwhile,
seen from another process (bench/bigkill.py's probe). Plain sockets, then permessage-deflate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from itertools import combinations
from pathlib import Path

import aiohttp

from killboard.kill.staticdata import LANGUAGES

from .bigkill import probe
from .data import fleet_fight, real_killmails
from .fanout import post_one
from .procstat import cpu_seconds
from .server import Server
from .wsclient import Pool

SUBSETS = [",".join(c) for n in range(1, len(LANGUAGES)) for c in combinations(LANGUAGES, n)]


async def one(
    server: Server, pool: Pool, session: aiohttp.ClientSession, km: dict[str, object], langs: list[str], deflate: bool
) -> dict[str, float]:
    """Connect a socket per entry of `langs`, post the kill, wait until every socket has it."""
    for lang in langs:
        await pool.connect("127.0.0.1", server.port, 1, path=f"/ws?lang={lang}", deflate=deflate)
    await asyncio.sleep(0.5)
    watch = asyncio.create_task(probe(server.url, 4.0))
    await asyncio.sleep(0.3)
    cpu = cpu_seconds(server.pid)
    started = time.perf_counter()
    await post_one(session, server.url, km)
    while await pool.received() < len(langs):
        if time.perf_counter() - started > 120:
            raise TimeoutError("the kill did not reach every socket in 120 s")
        await asyncio.sleep(0.02)
    delivered = time.perf_counter() - started
    used = cpu_seconds(server.pid) - cpu
    longest, median = await watch
    traffic = await pool.traffic()
    await pool.reset()
    await pool.close()
    return {
        "delivered_s": delivered,
        "server_cpu_s": used,
        "longest_health_ms": longest * 1e3,
        "median_health_ms": median * 1e3,
        "bytes_received": sum(got for got, _ in traffic.values()),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--attackers", type=int, default=3000)
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--root", type=Path, default=None, help="run another checkout's app.py (a before figure)")
    args = parser.parse_args()
    killmails = real_killmails()
    figures: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        server = Server(Path(folder) / "kb.sqlite3", **({"root": args.root} if args.root else {}))
        await server.start()
        pool = Pool(1)
        try:
            async with aiohttp.ClientSession() as session:
                print(f"{len(SUBSETS)} sockets, one kill of {args.attackers:,} attackers")
                print("case                    server CPU s  longest /health ms  delivered s  MB received")
                i = 0
                for deflate in (False, True):
                    for name, langs in (("all lang=en", ["en"] * len(SUBSETS)), ("254 lang subsets", SUBSETS)):
                        km = fleet_fight(killmails, args.attackers)
                        km["killmail_id"] = 10**12 + i  # a fresh kill each time
                        i += 1
                        case = f"{name}, {'deflate' if deflate else 'plain'}"
                        got = figures[case] = await one(server, pool, session, km, langs, deflate)
                        print(
                            f"{case:<24}{got['server_cpu_s']:12.2f}  {got['longest_health_ms']:18.1f}"
                            f"  {got['delivered_s']:11.2f}  {got['bytes_received'] / 1e6:11.1f}"
                        )
        finally:
            await pool.shutdown()
            server.stop()
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
