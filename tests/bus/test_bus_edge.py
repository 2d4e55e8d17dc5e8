"""An edge app in-process (killboard/bus/edge.py): while Redis is unreachable, and on an empty stream."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from conftest import AUTH, Client, settle, until
from redisproc import RedisServer

from killboard.bus.edge import create_edge_app
from killboard.config import Config


async def test_an_edge_without_redis_keeps_sockets_and_asks_replays_to_come_back(
    aiohttp_client: Callable[..., Awaitable[Client]], tmp_path: Path, config: Config
) -> None:

    server = RedisServer(tmp_path)  # never started: connection refused
    client = await aiohttp_client(create_edge_app(config.with_overrides(redis_url=server.url)))
    health = await (await client.get("/health")).json()
    assert health["status"] == "degraded" and health["bus"]["connected"] is False
    ws = await client.ws_connect("/ws")
    await ws.send_json({"action": "ping"})
    assert (await ws.receive_json(timeout=5))["action"] == "pong"
    await ws.send_json({"action": "sub", "channel": "kills", "since": 5})
    assert (await ws.receive_json(timeout=5))["action"] == "subscribed"
    msg = await ws.receive(timeout=10)
    assert msg.type.name == "CLOSE" and msg.data == 1013  # come back with since: nothing is skipped silently
    resp = await client.get("/")  # pages and the API are the writer's
    assert resp.status == 404 and "edge" in (await resp.json())["error"]


async def test_an_edge_started_on_an_empty_stream_reports_no_gap_where_the_stream_begins(
    aiohttp_client: Callable[..., Awaitable[Client]],
    make_client: Callable[..., Awaitable[Client]],
    redis_server: RedisServer,
    config: Config,
    killmails: list[dict[str, Any]],
) -> None:
    edge = await aiohttp_client(create_edge_app(config.with_overrides(redis_url=redis_server.url)))
    await until(lambda: _reads(edge), 15)
    ws = await edge.ws_connect("/ws")
    await ws.send_json({"action": "sub", "channel": "kills"})
    assert (await ws.receive_json(timeout=5))["action"] == "subscribed"
    # A database with 20 kills meets this Redis for the first time; the stream keeps 10.
    alone = await make_client()
    resp = await alone.post("/api/killmails", data=json.dumps(killmails[:20]), headers=AUTH)
    assert resp.status == 202
    await settle(alone)
    await make_client(redis_url=redis_server.url, redis_maxlen=10)
    frames = [await ws.receive_json(timeout=10) for _ in range(10)]
    assert [f["seq"] for f in frames] == list(range(11, 21))  # the stream's first entry says prev=10
    assert all(f["action"] == "kill" for f in frames)  # and no "skipped": this edge never had 1-10
    assert (await (await edge.get("/health")).json())["bus"]["skipped"] == 0


async def _reads(client: Client) -> bool:
    return bool((await (await client.get("/health")).json())["bus"]["connected"])
