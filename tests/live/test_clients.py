"""Slow and dead clients: one that stops reading, one that vanishes without a close, and 1,000
that connect and disconnect in a loop. Others keep receiving on time, memory stays bounded, and
no task, socket or file descriptor is left behind (counted through /health)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import time
from pathlib import Path
from typing import Any

import aiohttp
import rawws
from conftest import AUTH, Client, until
from serverproc import ServerProcess

from killboard.web.keys import hub_key, pipeline_key

SUB = json.dumps({"action": "sub", "channel": "kills"})
TOKEN = "clients-token"


def renumbered(killmails: list[dict[str, Any]], offset: int) -> list[dict[str, Any]]:
    return [{**km, "killmail_id": km["killmail_id"] + offset} for km in killmails]


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def open_files(pid: int) -> list[str]:
    """What the server's file descriptors point at (for a failure message)."""
    fd_dir = Path(f"/proc/{pid}/fd")
    return sorted(str(p.readlink()) for p in fd_dir.iterdir())


async def subscribed(session: aiohttp.ClientSession, url: str) -> aiohttp.ClientWebSocketResponse:
    ws = await session.ws_connect(url + "/ws")
    await ws.send_str(SUB)
    assert (await ws.receive_json(timeout=5))["action"] == "subscribed"
    return ws


async def read_kill_ids(ws: aiohttp.ClientWebSocketResponse, into: asyncio.Queue[int]) -> None:
    """Read a socket until it closes, putting each kill's id in `into` (and answering pings)."""
    async for message in ws:
        frame = json.loads(message.data)
        if frame["action"] == "kill":
            into.put_nowait(int(frame["data"]["killmail_id"]))


async def next_kill_id(ws: aiohttp.ClientWebSocketResponse, timeout: float) -> int:
    while True:
        message = await ws.receive_json(timeout=timeout)
        if message["action"] == "kill":
            return int(message["data"]["killmail_id"])


async def test_vanished_and_reset_clients_are_dropped_and_others_keep_receiving(
    make_client: Any, killmails: list[dict[str, Any]]
) -> None:
    # Heartbeat 0.5 s: a peer that answers no ping is closed within about a second.
    client: Client = await make_client(ws_heartbeat=0.5)
    hub = client.server.app[hub_key]
    host, port = client.server.host, client.server.port
    healthy = await client.ws_connect("/ws")
    await healthy.send_str(SUB)
    assert (await healthy.receive_json(timeout=5))["action"] == "subscribed"
    # The healthy client reads all the time, as a browser does: aiohttp answers the server's
    # pings only inside receive(), and with a 0.5 s heartbeat a loaded machine's POST and pause
    # between kills could outlast it and get the healthy client closed too.
    arrived: asyncio.Queue[int] = asyncio.Queue()
    reading = asyncio.create_task(read_kill_ids(healthy, arrived))

    # Vanishes: subscribed, then silent forever (no reads, no pongs, no FIN) like a dead laptop.
    _r1, ghost = await rawws.connect(host, port)
    await rawws.send_text(ghost, SUB)
    # Resets: the connection is torn down with an RST, no close frame.
    _r2, reset = await rawws.connect(host, port)
    await rawws.send_text(reset, SUB)
    for _ in range(100):
        if hub.subscribed_count() == 3:
            break
        await asyncio.sleep(0.01)
    assert hub.subscribed_count() == 3
    sock = reset.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    reset.transport.abort()

    for i, km in enumerate(renumbered(killmails[:6], 10**11)):
        sent = time.monotonic()
        resp = await client.post("/api/killmails", data=json.dumps(km), headers=AUTH)
        assert resp.status == 202
        assert await asyncio.wait_for(arrived.get(), 5) == km["killmail_id"]
        assert time.monotonic() - sent < 1.0, f"kill {i} took {time.monotonic() - sent:.2f} s to arrive"
        await asyncio.sleep(0.3)
    for _ in range(150):
        if len(hub) == 1:
            break
        await asyncio.sleep(0.02)
    assert len(hub) == 1, "the vanished or reset client is still counted as connected"
    assert hub.subscribed_count() == 1
    assert not reading.done(), "the healthy client was closed"
    reading.cancel()
    ghost.transport.abort()


async def test_stalled_reader_and_1000_connection_churn_leak_nothing(
    tmp_path: Path, killmails: list[dict[str, Any]]
) -> None:
    server = ServerProcess(tmp_path / "kb.sqlite3", env={"KILLBOARD_INGEST_TOKEN": TOKEN})
    await server.start()
    assert server.proc is not None
    headers = {"Authorization": f"Bearer {TOKEN}"}
    try:
        # force_close: no idle keep-alive sockets of ours in the server's fd count.
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(headers=headers, connector=connector) as session:

            async def health() -> dict[str, Any]:
                async with session.get(server.url + "/health") as resp:
                    return await resp.json()

            healthy = await subscribed(session, server.url)
            # Warm up (first kill fills caches and buffers), then take the baseline.
            async with session.post(server.url + "/api/killmails", json=killmails[0]) as resp:
                assert resp.status == 202
            await next_kill_id(healthy, timeout=10)
            await asyncio.sleep(0.3)
            before = await health()
            rss_before = rss(server.proc.pid)

            # The stalled reader: tiny receive window, never reads after subscribing.
            _reader, stalled = await rawws.connect("127.0.0.1", server.port, rcvbuf=4096)
            await rawws.send_text(stalled, SUB)

            async def churn(worker: int) -> None:
                for n in range(50):
                    if n % 3 == 0:  # clean close
                        ws = await subscribed(session, server.url)
                        await ws.close()
                    elif n % 3 == 1:  # vanishes: RST, no close frame
                        _r, w = await rawws.connect("127.0.0.1", server.port)
                        await rawws.send_text(w, SUB)
                        w.get_extra_info("socket").setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                        w.transport.abort()
                    else:  # half-open: the upgrade request and gone, never subscribes
                        _r, w = await rawws.connect("127.0.0.1", server.port)
                        w.close()

            churners = asyncio.gather(*(churn(i) for i in range(20)))  # 20 x 50 = 1,000 connections
            # Meanwhile kills keep arriving, and the healthy client gets each one promptly.
            late: list[float] = []
            stream = renumbered(killmails[1:], 10**11)
            for km in stream[:40]:
                sent = time.monotonic()
                async with session.post(server.url + "/api/killmails", json=km) as resp:
                    assert resp.status == 202
                assert await next_kill_id(healthy, timeout=10) == km["killmail_id"]
                late.append(time.monotonic() - sent)
                if churners.done():
                    break
                await asyncio.sleep(0.1)
            await churners
            assert max(late) < 2.0, f"the healthy client waited {max(late):.2f} s for a kill"

            # The stalled reader goes too; then the server is back to its baseline exactly:
            # every connection's tasks, sockets and descriptors were released.
            stalled.close()
            after: dict[str, Any] = {}
            for _ in range(200):
                after = await health()
                if after["clients"] == 1 and after["tasks"] <= before["tasks"] and after["fds"] <= before["fds"]:
                    break
                await asyncio.sleep(0.05)
            assert after["clients"] == 1, after
            assert after["tasks"] <= before["tasks"], f"tasks leaked: {before} {after}"
            assert after["fds"] <= before["fds"], f"descriptors leaked: {before} {after} {open_files(server.proc.pid)}"
            grown = rss(server.proc.pid) - rss_before
            assert grown < 32 * 1024 * 1024, f"RSS grew by {grown / 1e6:.1f} MB over 1,000 connections"
            await healthy.close()
    finally:
        server.stop()


async def test_sockets_the_heartbeat_gave_up_on_are_aborted_and_count_until_gone(
    make_client: Any, killmails: list[dict[str, Any]]
) -> None:
    """Clients that stop reading and stop answering pings, with frames stuck in the server's
    transport: aiohttp's heartbeat closes the transport, and a close waits for a flush that
    never comes. They must count toward KILLBOARD_WS_MAX_CLIENTS while they exist and be
    aborted (connection gone, descriptor freed) within about close_timeout."""
    cap = 4
    # A large byte budget, so the hub's 1013 for slow readers stays out of it: the heartbeat decides.
    # The heartbeat must not give up before the kills are stored and stuck in the transports: on a
    # loaded machine (4 test workers on 2 cores) storing them took longer than 0.5 s, and with
    # two suites at once (load 6.5) longer than 1.5 s.
    client: Client = await make_client(ws_heartbeat=3.0, ws_max_clients=cap, ws_send_buffer=64 * 2**20, batch_size=20)
    hub = client.server.app[hub_key]
    host, port = client.server.host, client.server.port
    stalled = []
    try:
        for _ in range(cap):
            reader, writer = await rawws.connect(host, port, rcvbuf=4096)
            await rawws.send_text(writer, SUB)
            stalled.append((reader, writer))
        for _ in range(200):
            if hub.subscribed_count() == cap:
                break
            await asyncio.sleep(0.01)
        assert hub.subscribed_count() == cap
        subs = list(hub._subscribers.values())
        # ~9 MB to each: more than the kernel buffers take, so frames wait in the server's transports.
        for n in range(4):
            resp = await client.post(
                "/api/killmails", data=json.dumps(renumbered(killmails, (n + 1) * 10**11)), headers=AUTH
            )
            assert resp.status == 202
        await asyncio.wait_for(client.server.app[pipeline_key].wait_idle(), 30)

        async def stuck() -> bool:
            return all(s.transport is not None and s.transport.get_write_buffer_size() for s in subs)

        # Stored is not yet written: the hub gives a batch's frames out in slices after the commit.
        with contextlib.suppress(TimeoutError):
            await until(stuck, 5)
        assert await stuck(), "nothing stuck"
        # The heartbeat gives up (~1.5x its period); the handlers end. Until the connections are
        # really gone they still count: a new socket is refused.
        for _ in range(1200):
            if not hub._subscribers:
                break
            await asyncio.sleep(0.01)
        assert not hub._subscribers, "the heartbeat did not give up on the silent clients"
        assert len(hub) == cap, "closing sockets no longer count toward the cap"
        extra = await client.ws_connect("/ws")
        msg = await extra.receive(timeout=5)
        assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == aiohttp.WSCloseCode.TRY_AGAIN_LATER

        # Within close_timeout (2 s) more, their transports are aborted though the clients still
        # read nothing: the server's descriptors are closed and the places are free again.
        sockets = [s.transport.get_extra_info("socket") for s in subs if s.transport is not None]
        for _ in range(250):
            if len(hub) == 0 and all(sock.fileno() == -1 for sock in sockets):
                break
            await asyncio.sleep(0.02)
        assert [sock.fileno() for sock in sockets] == [-1] * cap, "a connection nobody reads is still open"
        assert len(hub) == 0
        ws = await client.ws_connect("/ws")
        await ws.send_str(json.dumps({"action": "ping"}))
        assert (await ws.receive_json(timeout=5))["action"] == "pong"
    finally:
        for _, writer in stalled:  # also when it failed: their sockets must not outlive the test
            writer.close()
