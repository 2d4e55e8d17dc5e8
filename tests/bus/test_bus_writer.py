"""The bus writer in the real app over a real redis-server: what an entry holds, and refills when
the stream lost what the writer appended. Also: without KILLBOARD_REDIS_URL nothing imports redis."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import ujson
from aiohttp import ClientWebSocketResponse
from conftest import AUTH, Client, settle, until
from redis.asyncio import Redis
from redisproc import RedisServer

from killboard.bus import stream, writer
from killboard.config import PROJECT_ROOT
from killboard.kill.frames import kill_frame
from killboard.kill.topics import kill_facts
from killboard.web.keys import bus_status_key, hub_key

KEY = "killboard:kills"


async def post(client: Client, kills: list[dict[str, Any]]) -> None:
    resp = await client.post("/api/killmails", data=json.dumps(kills), headers=AUTH)
    assert resp.status == 202, await resp.text()


async def entries(url: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
    redis = Redis.from_url(url)
    try:
        return list(await redis.xrange(KEY))
    finally:
        await redis.aclose()


async def subscribed(client: Client) -> ClientWebSocketResponse:
    """A socket on the writer itself, subscribed to every kill."""
    ws = await client.ws_connect("/ws")
    await ws.send_json({"action": "sub", "channel": "kills"})
    assert (await ws.receive_json(timeout=5))["action"] == "subscribed"
    return ws


async def appended(client: Client, seq: int) -> None:
    async def check() -> bool:
        return bool(client.server.app[bus_status_key]()["stream_last_seq"] == seq)

    await until(check, 15)


async def test_each_stored_kill_becomes_one_entry_with_the_published_body_and_its_keys(
    make_client: Callable[..., Awaitable[Client]], redis_server: RedisServer, killmails: list[dict[str, Any]]
) -> None:
    client = await make_client(redis_url=redis_server.url)
    ws = await subscribed(client)
    await post(client, killmails[:12])
    await settle(client)
    await appended(client, 12)
    frames = [(await ws.receive(timeout=5)).data for _ in range(12)]
    rows = await entries(redis_server.url)
    assert [stream.entry_seq(i) for i, _ in rows] == list(range(1, 13))
    assert [i for i, _ in rows] == [b"%d-0" % n for n in range(1, 13)]  # explicit IDs: the seq is the offset
    for (entry_id, values), frame in zip(rows, frames, strict=True):
        raw = stream.decode(entry_id, values)
        body = zlib.decompress(values[b"b"])
        assert kill_frame(raw.seq, body).decode() == frame  # what the writer's own socket got
        assert raw.facts == kill_facts(ujson.loads(body))
        assert raw.prev == raw.seq - 1 and raw.live
    assert client.server.app[hub_key].deliveries == 12


async def test_a_stream_that_lost_its_entries_is_refilled_in_order_before_new_kills(
    make_client: Callable[..., Awaitable[Client]], redis_server: RedisServer, killmails: list[dict[str, Any]]
) -> None:
    client = await make_client(redis_url=redis_server.url)
    await post(client, killmails[:20])
    await settle(client)
    await appended(client, 20)
    redis = Redis.from_url(redis_server.url)
    await redis.delete(KEY)  # a flush, or a failover to an empty replica: the connection stays up
    await redis.aclose()
    await post(client, killmails[20:25])
    await settle(client)
    await appended(client, 25)
    rows = await entries(redis_server.url)
    assert [stream.entry_seq(i) for i, _ in rows] == list(range(1, 26))
    assert [int(v[b"p"]) for _, v in rows] == list(range(0, 25))  # a chain: no gap for an edge to see
    status = client.server.app[bus_status_key]()
    assert status["refilled"] == 20 and status["behind"] == 0
    metrics = await (await client.get("/metrics")).text()
    assert "killboard_bus_refilled_kills_total 20.0" in metrics and "killboard_bus_behind 0.0" in metrics


async def test_the_writer_serves_while_redis_is_down_and_catches_up_from_sqlite(
    make_client: Callable[..., Awaitable[Client]], tmp_path: Path, killmails: list[dict[str, Any]]
) -> None:
    redis_server = RedisServer(tmp_path)  # not started yet
    client = await make_client(redis_url=redis_server.url)
    ws = await subscribed(client)
    await post(client, killmails[:10])
    await settle(client)
    assert [json.loads((await ws.receive(timeout=5)).data)["seq"] for _ in range(10)] == list(range(1, 11))
    health = await (await client.get("/health")).json()
    assert health["bus"]["connected"] is False and health["bus"]["behind"] == 10
    redis_server.start()
    try:
        await appended(client, 10)
        assert [stream.entry_seq(i) for i, _ in await entries(redis_server.url)] == list(range(1, 11))
    finally:
        redis_server.stop()


def test_without_a_redis_url_nothing_imports_redis(tmp_path: Path) -> None:
    code = (
        "import sys, asyncio\n"
        "from killboard import cli\n"
        "from killboard.config import Config\n"
        "from killboard.server import create_app\n"
        f"create_app(Config(db_path=__import__('pathlib').Path({str(tmp_path / 'x.sqlite3')!r}), upstream=False))\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'redis'], 'redis imported'\n"
        "assert 'killboard.bus' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, check=True, timeout=60)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KILLBOARD_REDIS_URL": "http://user:secret@host"}, "KILLBOARD_REDIS_URL must start with redis://"),
        ({"KILLBOARD_REDIS_URL": "redis://x", "KILLBOARD_REDIS_MAXLEN": "0"}, "KILLBOARD_REDIS_MAXLEN must be"),
        ({}, "python app.py edge needs KILLBOARD_REDIS_URL"),
    ],
)
def test_bad_bus_settings_are_one_line_and_exit_1(env: dict[str, str], message: str) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KILLBOARD_")}
    done = subprocess.run(
        [sys.executable, "app.py", "edge"], cwd=PROJECT_ROOT, env={**clean, **env}, capture_output=True, timeout=60
    )
    assert done.returncode == 1
    assert done.stderr.decode().strip().splitlines() == [done.stderr.decode().strip()]
    assert message in done.stderr.decode()
    assert "secret" not in done.stderr.decode()


def test_entry_bodies_read_back_whichever_zlib_compressed_them(killmails: list[dict[str, Any]]) -> None:
    """The writer compresses with isal when installed: a plain zlib stream (header, checksum), so
    an edge of any version reads new entries, and entries an older writer made with stdlib zlib
    read back as before."""
    body = ujson.dumps(killmails[0]).encode()
    entry = stream.Entry(seq=7, prev=6, body=body, facts=kill_facts(killmails[0]), live=True)
    (new,) = writer._compress_all([entry])
    old = zlib.compress(body, 1)
    for blob in (new, old):
        values = stream.fields(entry, blob, 1.0)
        raw = stream.decode(b"7-0", dict(zip(values[::2], values[1::2], strict=True)))
        assert raw.body() == body and (raw.seq, raw.prev) == (7, 6)
    assert len(new) < len(body) // 2
    if importlib.util.find_spec("isal") is not None:  # installed where requirements.txt says
        assert writer._deflate is not zlib and new != old
