"""SIGTERM while kills are queued and clients are connected: the queue is drained to SQLite,
every client gets close code 1001, and the process exits within 5 s."""

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

TOKEN = "stop-token"
SUB = json.dumps({"action": "sub", "channel": "kills"})


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
            async with session.get(server.url + "/health") as resp:
                waiting = (await resp.json())["queue"]
            assert waiting > 0, "the worker had already finished: nothing was queued at SIGTERM"

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
        assert inbox == 0, f"{inbox} acknowledged kills left undrained"
        assert stored == set(acked) | {km["killmail_id"] for km in warmup}
    finally:
        server.stop()
