"""Event-loop stall on fleet-fight kills: `python -m bench.bigkill`.

Posts kills of 1,000 / 3,000 / 10,000 attackers (real attackers, cycled; 10,000 is the bound a
kill may have) to a real server with a live subscriber, while another process asks /health every
5 ms; the longest /health wait while each kill is parsed, enriched, stored, broadcast and read
back is the loop's stall (a quiet /health answers in ~1-2 ms). /health also waits for the
database's reader thread, so a third process pings the server over a WebSocket every 5 ms:
aiohttp answers a ping on the loop itself, so the longest ping -> pong is the loop's own stall
without the database (and without a new connection per probe). `--baseline /work/main --rounds 2`
runs another checkout's server the same way, alternating with this one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import ujson

from killboard.config import PROJECT_ROOT

from .data import fleet_fight, real_killmails
from .fanout import post_one
from .server import Server

SIZES = (1000, 3000, 10_000)


# The probe runs in a process of its own: in this one, receiving the kill's frame (megabytes,
# inflated) would stall the probe's own loop and be counted against the server.
PROBE = """
import sys, time, urllib.request
url, seconds = sys.argv[1], float(sys.argv[2])
waits, end = [], time.monotonic() + seconds
while time.monotonic() < end:
    started = time.perf_counter()
    urllib.request.urlopen(url + "/health").read()
    waits.append(time.perf_counter() - started)
    time.sleep(0.005)
waits.sort()
print(waits[-1], waits[len(waits) // 2])
"""


# The loop's own stall: a WebSocket ping is answered by aiohttp's reader on the loop, no database.
PING_PROBE = """
import asyncio, sys, time, aiohttp
async def main(url, seconds):
    waits = []
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url + "/ws", autoping=False) as ws:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                started = time.perf_counter()
                await ws.ping()
                while (await ws.receive(10)).type != aiohttp.WSMsgType.PONG:
                    pass  # the server's own heartbeat pings
                waits.append(time.perf_counter() - started)
                await asyncio.sleep(0.005)
    waits.sort()
    print(waits[-1], waits[len(waits) // 2])
asyncio.run(main(sys.argv[1], float(sys.argv[2])))
"""


async def probe(url: str, seconds: float, script: str = PROBE) -> tuple[float, float]:
    """(longest, median) /health wait (or ping -> pong with PING_PROBE) over `seconds`, seen from
    another process."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, url, str(seconds), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    longest, median = out.split()
    return float(longest), float(median)


async def one(
    server: Server, session: aiohttp.ClientSession, km: dict[str, object]
) -> tuple[float, float, float, float, float]:
    """(seconds from POST to the frame on the socket, longest /health wait, quiet /health median,
    longest /health wait over as long with no kill, longest ping -> pong)."""
    floor, quiet = await probe(server.url, 3.0)  # the machine's own noise: as long, no kill
    async with session.ws_connect(server.url + "/ws", max_msg_size=64 << 20) as ws:
        await ws.send_json({"action": "sub", "channel": "kills"})
        await ws.receive(5)  # the subscription's acknowledgement
        watch = asyncio.create_task(probe(server.url, 3.0))
        pings = asyncio.create_task(probe(server.url, 3.0, PING_PROBE))
        await asyncio.sleep(0.3)
        started = time.perf_counter()
        await post_one(session, server.url, km)
        while True:
            msg = await ws.receive(60)
            if msg.type == aiohttp.WSMsgType.TEXT and '"action":"kill"' in msg.data[:40]:
                break
        delivered = time.perf_counter() - started
        async with session.get(f"{server.url}/api/killmails/{km['killmail_id']}") as resp:
            await resp.read()
        longest, _ = await watch
        pong, _ = await pings
    return delivered, longest, quiet, floor, pong


async def run(root: Path, label: str, sizes: tuple[int, ...], rows: list[dict[str, object]]) -> None:
    """One server of the checkout at `root`, every size once, a line each (and a row in `rows`)."""
    killmails = real_killmails()
    with tempfile.TemporaryDirectory() as folder:
        server = Server(Path(folder) / "kb.sqlite3", root=root)
        await server.start()
        try:
            async with aiohttp.ClientSession() as session:
                for i, size in enumerate(sizes):
                    km = fleet_fight(killmails, size)
                    km["killmail_id"] = 10**12 + i  # a fresh kill each time
                    delivered, stall, quiet, floor, pong = await one(server, session, km)
                    mb = len(ujson.dumps(km)) / 1e6
                    load = os.getloadavg()[0]
                    rows.append(
                        {"tree": label, "attackers": size, "body_mb": mb, "delivered_s": delivered,
                         "health_ms": stall * 1e3, "quiet_health_ms": quiet * 1e3,
                         "no_kill_health_ms": floor * 1e3, "pong_ms": pong * 1e3, "load": load}
                    )  # fmt: skip
                    print(
                        f"{label:9}  {size:9,}  {mb:7.2f}  {delivered:11.3f}  {stall * 1e3:18.1f}"
                        f"  {quiet * 1e3:16.1f}  {floor * 1e3:17.1f}  {pong * 1e3:17.1f}  {load:4.1f}",
                        flush=True,
                    )
        finally:
            server.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--baseline", type=Path, help="another checkout (e.g. /work/main), run alternating with this one"
    )
    parser.add_argument("--rounds", type=int, default=1, help="times each tree runs (alternating with --baseline)")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="attacker counts, comma-separated")
    parser.add_argument("--json", type=Path, help="also write the rows there")
    args = parser.parse_args()
    sizes = tuple(int(s) for s in args.sizes.split(","))
    print(
        "tree       attackers  body MB  delivered s  longest /health ms  quiet /health ms  longest, no kill"
        "  longest pong ms  load"
    )
    rows: list[dict[str, object]] = []
    for _ in range(args.rounds):
        if args.baseline is not None:
            await run(args.baseline, "baseline", sizes, rows)
        await run(PROJECT_ROOT, "this", sizes, rows)
    if args.json is not None:
        args.json.write_text(json.dumps({"rows": rows}, indent=1))


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
