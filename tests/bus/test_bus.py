"""Past one process (killboard/bus): a writer and edges as real processes over a real redis-server.

Every test starts `python app.py` (the writer, with KILLBOARD_REDIS_URL) and `python app.py edge`
processes on free ports, and real WebSocket clients on them; kills go in through the writer's
POST /api/killmails.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import ujson
from conftest import until
from redisproc import RedisServer
from serverproc import ServerProcess

TOKEN = "bus-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Listener:
    """One WebSocket client: subscribes, keeps every kill frame (raw text) it gets, and can move
    to another server with `since` = the last seq it has, as a real client would."""

    def __init__(self, url: str, channel: str = "kills") -> None:
        self.url = url
        self.channel = channel
        self.frames: list[str] = []  # kill frames, as received
        self.others: list[dict[str, Any]] = []  # everything else
        self.closed: list[int | None] = []  # close codes seen
        self.task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    @property
    def seqs(self) -> list[int]:
        return [ujson.loads(f)["seq"] for f in self.frames]

    async def start(self, since: int | None = None) -> None:
        self._ready = asyncio.Event()
        self.task = asyncio.create_task(self._run(since))
        await asyncio.wait_for(self._ready.wait(), 15)

    async def _run(self, since: int | None) -> None:
        async with aiohttp.ClientSession() as session, session.ws_connect(self.url + "/ws") as ws:
            message: dict[str, Any] = {"action": "sub", "channel": self.channel}
            if since is not None:
                message["since"] = since
            await ws.send_json(message)
            async for msg in ws:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    break
                data = ujson.loads(msg.data)
                if data["action"] == "kill":
                    self.frames.append(msg.data)
                else:
                    self.others.append(data)
                    if data["action"] == ("replay" if since is not None else "subscribed"):
                        self._ready.set()
            self.closed.append(ws.close_code)

    def alive(self) -> bool:
        return self.task is not None and not self.task.done()

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with suppress(asyncio.CancelledError, aiohttp.ClientError):
                await self.task


@pytest.fixture
async def processes() -> AsyncIterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for proc in started:
        proc.stop()


async def writer(tmp_path: Path, redis: RedisServer, started: list[ServerProcess], **env: str) -> ServerProcess:
    proc = ServerProcess(
        tmp_path / "writer.sqlite3",
        env={"KILLBOARD_INGEST_TOKEN": TOKEN, "KILLBOARD_REDIS_URL": redis.url, **env},
    )
    started.append(proc)
    await proc.start()
    return proc


async def edge(
    tmp_path: Path, redis: RedisServer, started: list[ServerProcess], name: str, **env: str
) -> ServerProcess:
    # The db path only names the log file: an edge opens no database.
    proc = ServerProcess(tmp_path / f"{name}.sqlite3", env={"KILLBOARD_REDIS_URL": redis.url, **env}, args=["edge"])
    started.append(proc)
    await proc.start()
    await until(lambda: connected(proc), 15)
    return proc


async def cluster(
    tmp_path: Path, redis: RedisServer, started: list[ServerProcess]
) -> tuple[ServerProcess, list[ServerProcess]]:
    """A writer and two edges."""
    main = await writer(tmp_path, redis, started)
    return main, [await edge(tmp_path, redis, started, f"edge{i}") for i in (1, 2)]


async def health(proc: ServerProcess) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(proc.url + "/health") as resp:
        result: dict[str, Any] = await resp.json()
        return result


async def connected(proc: ServerProcess) -> bool:
    try:
        return bool((await health(proc))["bus"]["connected"])
    except (aiohttp.ClientError, OSError):
        return False


async def post(proc: ServerProcess, kills: list[dict[str, Any]]) -> None:
    async with (
        aiohttp.ClientSession(headers=AUTH) as session,
        session.post(proc.url + "/api/killmails", json=kills) as resp,
    ):
        assert resp.status == 202, await resp.text()


async def received(listeners: list[Listener], count: int, timeout: float = 30) -> None:
    async def check() -> bool:
        return all(len(x.frames) >= count for x in listeners)

    try:
        await until(check, timeout)
    except TimeoutError:
        raise AssertionError(f"expected {count} kills each, got {[len(x.frames) for x in listeners]}") from None


async def test_every_subscriber_on_either_edge_gets_every_kill_once_byte_for_byte(
    tmp_path: Path, redis_server: RedisServer, processes: list[ServerProcess], killmails: list[dict[str, Any]]
) -> None:
    main, edges = await cluster(tmp_path, redis_server, processes)
    system = f"system.{killmails[0]['solar_system_id']}"
    wanted = sum(1 for k in killmails if k["solar_system_id"] == killmails[0]["solar_system_id"])
    everything = [Listener(p.url) for p in (main, *edges) for _ in range(3)]
    narrow = [Listener(p.url, system) for p in (main, *edges)]
    for listener in everything + narrow:
        await listener.start()
    for i in range(0, len(killmails), 10):
        await post(main, killmails[i : i + 10])
    await received(everything, len(killmails))
    await received(narrow, wanted)
    await asyncio.sleep(0.5)  # anything extra (a duplicate) would arrive by now
    reference = everything[0].frames
    assert sorted(reference) == sorted(set(reference))
    assert len(reference) == len(killmails)
    for listener in everything:
        assert listener.frames == reference, listener.url  # same bytes, same order, once each
    for listener in narrow:
        assert listener.frames == narrow[0].frames
        assert len(listener.frames) == wanted
    for proc in edges:
        status = await health(proc)
        assert status["role"] == "edge"
        assert status["bus"]["last_seq"] == len(killmails)
        assert status["bus"]["skipped"] == 0
    async with aiohttp.ClientSession() as session, session.get(edges[0].url + "/metrics") as resp:
        text = await resp.text()
    assert "killboard_bus_last_seq 82.0" in text
    assert "killboard_websocket_connected 4.0" in text


async def test_clients_of_a_killed_edge_resume_on_the_other_and_miss_nothing(
    tmp_path: Path, redis_server: RedisServer, processes: list[ServerProcess], killmails: list[dict[str, Any]]
) -> None:
    main, (first, second) = await cluster(tmp_path, redis_server, processes)
    moving = [Listener(first.url) for _ in range(4)]
    staying = Listener(second.url)
    for listener in [*moving, staying]:
        await listener.start()
    await post(main, killmails[:30])
    await received(moving, 30)

    feeding = asyncio.create_task(post_slowly(main, killmails[30:]))
    await asyncio.sleep(0.2)
    first.kill()  # kill -9 while kills flow
    await until(lambda: _all_done(moving), 10)
    for listener in moving:  # each reconnects to the other edge with the last seq it has
        listener.url = second.url
        await listener.start(since=listener.seqs[-1])
    await feeding
    everything = list(range(1, len(killmails) + 1))
    await received([*moving, staying], len(killmails), 40)
    await asyncio.sleep(0.5)
    for listener in [*moving, staying]:
        assert listener.seqs == everything  # nothing missed, nothing twice, in order
    assert sorted(set(staying.frames)) == sorted(staying.frames)
    for listener in moving:
        assert listener.frames == staying.frames
        replay = [m for m in listener.others if m["action"] == "replay"]
        assert replay and replay[-1]["recovered"] is True


async def post_slowly(proc: ServerProcess, kills: list[dict[str, Any]], size: int = 4, pause: float = 0.1) -> None:
    for i in range(0, len(kills), size):
        await post(proc, kills[i : i + size])
        await asyncio.sleep(pause)


async def _all_done(listeners: list[Listener]) -> bool:
    return not any(x.alive() for x in listeners)


async def test_redis_restarted_empty_while_kills_flow_loses_no_kill(
    tmp_path: Path, redis_server: RedisServer, processes: list[ServerProcess], killmails: list[dict[str, Any]]
) -> None:
    main, edges = await cluster(tmp_path, redis_server, processes)
    on_edges = [Listener(p.url) for p in edges for _ in range(2)]
    on_writer = Listener(main.url)
    for listener in [*on_edges, on_writer]:
        await listener.start()
    await post(main, killmails[:20])
    await received(on_edges, 20)

    redis_server.stop()  # gone, with everything it held
    await post(main, killmails[20:40])
    await received([on_writer], 40)  # the writer's own sockets do not wait for Redis

    async def bus_down() -> bool:
        return (await health(main))["bus"]["connected"] is False

    # The writer learns Redis is gone when an append fails, which may still be under way when
    # its sockets already have the kills (this failed about one run in two, also on one process).
    await until(bus_down, 10)
    redis_server.start()  # back, empty
    await post_slowly(main, killmails[40:])
    await received(on_edges, len(killmails), 40)
    await asyncio.sleep(0.5)
    everything = list(range(1, len(killmails) + 1))
    for listener in [*on_edges, on_writer]:
        assert listener.seqs == everything
        assert listener.alive()  # the edges kept their sockets open throughout
    for listener in on_edges:
        assert listener.frames == on_writer.frames
    status = (await health(main))["bus"]
    assert status["connected"] and status["stream_last_seq"] == len(killmails) and status["behind"] == 0
    # The refilled stream reaches back to the start again: a late `since` replays from it.
    late = Listener(edges[0].url)
    await late.start(since=0)
    await received([late], len(killmails))
    assert late.seqs == everything
    assert late.others[-1]["recovered"] is True


async def test_edges_keep_their_sockets_while_the_writer_restarts(
    tmp_path: Path, redis_server: RedisServer, processes: list[ServerProcess], killmails: list[dict[str, Any]]
) -> None:
    main, edges = await cluster(tmp_path, redis_server, processes)
    listeners = [Listener(p.url) for p in edges for _ in range(2)]
    for listener in listeners:
        await listener.start()
    await post(main, killmails[:40])
    await received(listeners, 40)
    assert main.terminate() == 0  # a deploy: SIGTERM, then the new version starts
    await asyncio.sleep(0.5)
    assert all(x.alive() for x in listeners)
    await main.start()
    await post(main, killmails[40:])
    await received(listeners, len(killmails))
    await asyncio.sleep(0.3)
    for listener in listeners:
        assert listener.alive() and not listener.closed
        assert listener.seqs == list(range(1, len(killmails) + 1))
    # An edge's own stop (SIGTERM) closes its sockets with 1001, as the writer does.
    assert edges[0].terminate() == 0
    await until(lambda: _all_done(listeners[:2]), 10)
    assert [x.closed for x in listeners[:2]] == [[1001], [1001]]
    assert all(x.alive() for x in listeners[2:])


async def test_an_edge_started_late_replays_from_the_stream(
    tmp_path: Path, redis_server: RedisServer, processes: list[ServerProcess], killmails: list[dict[str, Any]]
) -> None:
    main = await writer(tmp_path, redis_server, processes)
    on_writer = Listener(main.url)
    await on_writer.start()
    await post(main, killmails[:50])
    await received([on_writer], 50)
    late = await edge(tmp_path, redis_server, processes, "late")
    resumed = Listener(late.url)
    await resumed.start(since=10)
    await post(main, killmails[50:])
    await received([on_writer], len(killmails))
    await received([resumed], len(killmails) - 10)
    await asyncio.sleep(0.3)
    assert resumed.frames == on_writer.frames[10:]  # replayed from the stream, then live, byte for byte
    replay = next(m for m in resumed.others if m["action"] == "replay")
    assert replay == {"action": "replay", "channel": "kills", "recovered": True, "from": 10, "to": 50}


async def test_an_edge_behind_the_trim_tells_its_sockets_and_replays_say_not_recovered(
    tmp_path: Path, processes: list[ServerProcess], killmails: list[dict[str, Any]], trimming_redis: RedisServer
) -> None:
    main = await writer(tmp_path, trimming_redis, processes, KILLBOARD_REDIS_MAXLEN="10")
    behind = await edge(tmp_path, trimming_redis, processes, "behind")
    listener = Listener(behind.url)
    await listener.start()
    await post(main, killmails[:5])
    await received([listener], 5)
    assert behind.proc is not None
    behind.proc.send_signal(signal.SIGSTOP)  # the edge stalls while the stream moves on
    try:
        for i in range(5, 60, 5):
            await post(main, killmails[i : i + 5])
        await until(lambda: _stream_trimmed(main), 20)
    finally:
        behind.proc.send_signal(signal.SIGCONT)
    await until(lambda: _has_notice(listener), 20)
    notice = next(m for m in listener.others if m["action"] == "skipped")
    # `from`: the last seq the edge read (a blocked XREAD's answer may still have been in its
    # socket buffer when it stopped); `to`: where the trimmed stream now begins.
    start, end = notice["from"], notice["to"]
    assert 5 <= start < end < 60
    assert notice["fallback"] == f"/api/killmails?after={start}&limit=500"
    await received([listener], start + 60 - end)
    assert listener.seqs == [*range(1, start + 1), *range(end + 1, 61)]
    assert (await health(behind))["bus"]["skipped"] == end - start
    # A replay from before the stream's start says so, and starts where the stream does.
    late = Listener(behind.url)
    await late.start(since=3)
    replay = next(m for m in late.others if m["action"] == "replay")
    assert replay["recovered"] is False and replay["from"] > 3 and replay["to"] == 60
    await received([late], 60 - replay["from"])
    assert late.seqs == list(range(replay["from"] + 1, 61))


async def _stream_trimmed(proc: ServerProcess) -> bool:
    status = (await health(proc))["bus"]
    return bool(status["stream_last_seq"] == 60)


async def _has_notice(listener: Listener) -> bool:
    return any(m["action"] == "skipped" for m in listener.others)
