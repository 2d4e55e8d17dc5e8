"""SIGTERM while kills are queued and clients are connected: the queue is drained to SQLite,
every client gets close code 1001, and the process exits within 5 s.

A stop gives the worker DRAIN_TIMEOUT (2 s, after closing the sockets) and leaves the rest in the
inbox for the next start (killboard/server.py). So the SIGTERM goes when what is left is what this
worker stores in a quarter of that window at the rate it shows in this run, not at a fixed count:
under heavy load, 984 kills once took longer than the window."""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import aiohttp
import rawws
from serverproc import ServerProcess

from killboard.config import Config

TOKEN = "stop-token"
SUB = json.dumps({"action": "sub", "channel": "kills"})
# Seconds of the worker's work left in the inbox at the SIGTERM, at the rate measured just before:
# a quarter of the 2 s drain window, a 4x margin for the machine slowing down at that moment.
DRAIN_SHARE = 0.5


async def inbox_left_to_drain(session: aiohttp.ClientSession, url: str, queued: int, since: float) -> int:
    """Polls /health while the worker stores the `queued` kills (queued at `since`) until the inbox
    holds more than none and at most DRAIN_SHARE seconds of work (at least one batch: it stores
    a batch at a time) at the rate seen so far; returns that count."""
    while True:
        async with session.get(url + "/health") as resp:
            left = (await resp.json())["inbox"]
        assert left > 0, f"the worker stored all {queued} kills before the stop could be sent"
        rate = (queued - left) / (time.monotonic() - since)
        if left < queued and left <= max(rate * DRAIN_SHARE, Config().batch_size):
            return int(left)
        await asyncio.sleep(0.02)


async def read_until_close(ws: aiohttp.ClientWebSocketResponse) -> tuple[int, int | None]:
    """(kill frames received, close code) once the server closes the socket."""
    kills = 0
    while True:
        msg = await ws.receive(timeout=15)
        if msg.type is aiohttp.WSMsgType.TEXT:
            kills += json.loads(msg.data)["action"] == "kill"
        else:
            return kills, ws.close_code


async def test_sigterm_drains_the_queue_closes_clients_with_1001_and_exits_quickly(
    tmp_path: Path, killmails: list[dict[str, Any]]
) -> None:
    db = tmp_path / "kb.sqlite3"
    # A byte budget above the 10 MB warm-up: the three readers are this test's own, and on a loaded
    # machine (make test runs 4 workers) one fell 4 MiB behind and was closed with 1013 before the
    # SIGTERM this test is about. Budgets have their own tests (test_ws_memory.py).
    env = {"KILLBOARD_INGEST_TOKEN": TOKEN, "KILLBOARD_WS_SEND_BUFFER": str(64 * 2**20)}
    server = ServerProcess(db, env=env)
    try:
        await server.start()
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:
            clients = [await session.ws_connect(server.url + "/ws") for _ in range(3)]
            for ws in clients:
                await ws.send_str(SUB)
                assert (await ws.receive_json(timeout=5))["action"] == "subscribed"
            # One more that subscribed and then stopped reading: it must not hold the stop up.
            _reader, stuck = await rawws.connect("127.0.0.1", server.port, rcvbuf=4096)
            await rawws.send_text(stuck, SUB)
            # ~10 MB of frames: the stuck client's kernel buffers fill and its writer blocks.
            warmup = [{**km, "killmail_id": km["killmail_id"] + n * 10**12} for n in range(1, 5) for km in killmails]
            async with session.post(
                server.url + "/api/killmails", data=io.BytesIO(json.dumps(warmup).encode())
            ) as resp:
                assert resp.status == 202

            async def take_warmup(ws: aiohttp.ClientWebSocketResponse) -> None:
                for _ in warmup:
                    msg = await ws.receive(timeout=15)
                    assert json.loads(msg.data)["action"] == "kill"

            # All at once: a client left unread for 10 MB would pass its byte budget (1013).
            await asyncio.gather(*(take_warmup(ws) for ws in clients))
            readers = [asyncio.create_task(read_until_close(ws)) for ws in clients]

            # One POST of 984 kills: acknowledged once in the inbox, then queued for the worker.
            batch = [{**km, "killmail_id": km["killmail_id"] + n * 10**10} for n in range(1, 13) for km in killmails]
            body = io.BytesIO(json.dumps(batch).encode())  # a large bytes body warns in aiohttp
            async with session.post(server.url + "/api/killmails", data=body) as resp:
                assert resp.status == 202
                acked = (await resp.json())["accepted"]
            assert len(acked) == len(batch)
            left = await inbox_left_to_drain(session, server.url, len(batch), time.monotonic())

            started = time.monotonic()
            assert server.proc is not None
            code = await asyncio.to_thread(server.terminate, 10)
            elapsed = time.monotonic() - started
            results = await asyncio.gather(*readers)
            stuck.close()
        assert code == 0
        assert elapsed < 5, f"took {elapsed:.1f} s to stop"
        assert [close for _, close in results] == [aiohttp.WSCloseCode.GOING_AWAY] * 3
        with closing(sqlite3.connect(db)) as conn:
            inbox = conn.execute("SELECT count(*) FROM inbox").fetchone()[0]
            stored = {row[0] for row in conn.execute("SELECT killmail_id FROM kills")}
        assert inbox == 0, f"{inbox} of the {left} acknowledged kills in the inbox at the stop left undrained"
        assert stored == set(acked) | {km["killmail_id"] for km in warmup}
    finally:
        server.stop()
