"""An edge app in-process (killboard/bus/edge.py): what it does while Redis is unreachable."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from conftest import Client
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
