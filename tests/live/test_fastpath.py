"""The hub's fast path (issue 21): frames for idle sockets are written straight to their
transports, one write per socket per turn of the loop however many kills are due, on asyncio's
loop as on uvloop (KILLBOARD_LOOP=uvloop); a socket that falls behind still takes the
bounded outbox and is dropped at its byte budget."""

from __future__ import annotations

import asyncio
import gc
import json
from typing import Any

import pytest
import rawws
from aiohttp import WSMsgType
from conftest import AUTH, settle

from killboard.cli import event_loop
from killboard.web.keys import hub_key

LOOPS = ("asyncio", "uvloop")  # tests/conftest.py runs each test here on both
SUB = json.dumps({"action": "sub", "channel": "kills"})


async def kill_seqs(ws: Any, count: int) -> list[int]:
    """The seqs of the next `count` frames on a client socket, each checked to be a kill."""
    seqs = []
    while len(seqs) < count:
        msg = await ws.receive(timeout=10)
        assert msg.type is WSMsgType.TEXT
        frame = json.loads(msg.data)
        assert frame["action"] == "kill"
        seqs.append(frame["seq"])
    return seqs


async def test_idle_sockets_get_a_turns_kills_in_one_write_each(
    make_client: Any, killmails: list[dict[str, Any]]
) -> None:
    """A batch of kills stored in one turn reaches every idle socket (plain and deflate) in seq
    order, without a writer task (no queued write) and in fewer transport writes than frames."""
    client = await make_client(batch_size=50)
    hub = client.server.app[hub_key]
    plain = [await client.ws_connect("/ws", compress=0) for _ in range(3)]
    deflate = [await client.ws_connect("/ws", compress=15) for _ in range(3)]
    for ws in plain + deflate:
        await ws.send_str(SUB)
        assert (await ws.receive_json(timeout=5))["action"] == "subscribed"
    assert all(ws.compress for ws in deflate) and not any(ws.compress for ws in plain), [ws.compress for ws in deflate]
    direct0, writes0 = hub.direct_writes, hub.transport_writes
    batch = killmails[:30]
    resp = await client.post("/api/killmails", data=json.dumps(batch), headers=AUTH)
    assert resp.status == 202
    await settle(client)
    for ws in plain + deflate:
        seqs = await kill_seqs(ws, len(batch))
        assert seqs == sorted(seqs) and len(set(seqs)) == len(batch)
    assert hub.queued_writes == 0, "an idle socket's frame went through its writer task"
    frames = len(batch) * 6
    assert hub.direct_writes - direct0 == frames
    assert hub.transport_writes - writes0 < frames, "several kills due in one turn were written one by one"
    for ws in plain + deflate:
        await ws.close()


async def test_a_stalled_client_is_dropped_at_its_budget_and_a_reader_gets_everything(
    make_client: Any, killmails: list[dict[str, Any]]
) -> None:
    """The budget counts the outbox and what the transport holds unsent, on either loop (uvloop's
    transports are no asyncio.WriteTransport): a client that never reads is closed with 1013 near
    KILLBOARD_WS_SEND_BUFFER, long before 512 frames, while a client that reads gets every kill."""
    budget = 256 * 1024
    client = await make_client(ws_send_buffer=budget, batch_size=10)
    hub = client.server.app[hub_key]
    reader = await client.ws_connect("/ws", compress=0)
    await reader.send_str(SUB)
    assert (await reader.receive_json(timeout=5))["action"] == "subscribed"
    _r, stalled = await rawws.connect(client.server.host, client.server.port, rcvbuf=4096)
    await rawws.send_text(stalled, SUB)
    for _ in range(200):
        if hub.subscribed_count() == 2:
            break
        await asyncio.sleep(0.01)
    slow = list(hub._subscribers.values())[-1]
    most = 0

    def watch() -> None:
        nonlocal most
        most = max(most, hub.held_bytes(slow))
        if not slow.dropped:
            asyncio.get_running_loop().call_soon(watch)

    watch()
    kills = [{**km, "killmail_id": km["killmail_id"] + n * 10**10} for n in range(4) for km in killmails]

    async def read_all() -> int:
        got = 0
        while got < len(kills):
            if (await reader.receive_json(timeout=10))["action"] == "kill":
                got += 1
        return got

    reading = asyncio.create_task(read_all())
    for i in range(0, len(kills), len(killmails)):
        resp = await client.post("/api/killmails", data=json.dumps(kills[i : i + len(killmails)]), headers=AUTH)
        assert resp.status == 202
    await settle(client)
    assert await reading == len(kills)
    assert slow.dropped and slow.close_code == 1013, "the client that never reads was not dropped"
    assert slow.close_message == b"send buffer full: client reads too slowly"
    largest = max(len(json.dumps(km)) for km in killmails) * 8  # an enriched frame is several times its ESI body
    assert 0 < most <= budget + largest, most
    stalled.transport.abort()


def test_the_server_loop_is_asyncio_unless_uvloop_is_asked_for() -> None:
    import uvloop

    for env in ({}, {"KILLBOARD_LOOP": "asyncio"}, {"KILLBOARD_LOOP": " AsyncIO "}):
        loop = event_loop(env)
        try:
            assert not isinstance(loop, uvloop.Loop) and isinstance(loop, asyncio.AbstractEventLoop)
        finally:
            loop.close()
    loop = event_loop({"KILLBOARD_LOOP": "uvloop"})
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()
    with pytest.raises(SystemExit, match="KILLBOARD_LOOP must be asyncio or uvloop, got 'tokio'"):
        event_loop({"KILLBOARD_LOOP": "tokio"})


async def test_a_broadcast_holds_no_garbage_collected_object_per_socket(
    make_client: Any, killmails: list[dict[str, Any]]
) -> None:
    """What a kill leaves pending for the turn's flush is bytes, not a list per socket: 60
    sockets' worth of lists made the collector run every ~700 sockets of a broadcast."""
    client = await make_client()
    hub = client.server.app[hub_key]
    sockets = [await client.ws_connect("/ws", compress=15 if i % 2 else 0) for i in range(60)]
    for ws in sockets:
        await ws.send_str(SUB)
        assert (await ws.receive_json(timeout=5))["action"] == "subscribed"
    live: list[tuple[int, int]] = []
    publish = hub.publish

    def measured(*args: Any, **kwargs: Any) -> int:
        gc.disable()  # no collection may reset the count while it is read
        try:
            before = gc.get_count()[0]
            sent = publish(*args, **kwargs)
            live.append((sent, gc.get_count()[0] - before))  # before the flush: pending frames alive
        finally:
            gc.enable()
        return sent

    hub.publish = measured
    small = min(killmails, key=lambda km: len(json.dumps(km)))  # deflated on the loop, at once
    resp = await client.post("/api/killmails", data=json.dumps(small), headers=AUTH)
    assert resp.status == 202
    await settle(client)
    for ws in sockets:
        while (await ws.receive_json(timeout=5))["action"] != "kill":
            pass
    [(sent, objects)] = live
    assert sent == len(sockets)
    assert objects < len(sockets) // 4, f"{objects} objects tracked by the collector for {sent} sockets"
    for ws in sockets:
        await ws.close()


@pytest.mark.parametrize("per_post", [1, 3])
async def test_a_partial_write_leaves_the_rest_to_the_transport_in_order(
    make_client: Any, killmails: list[dict[str, Any]], per_post: int
) -> None:
    """A frame written straight to a socket whose kernel buffer is nearly full goes out whole:
    what the kernel did not take waits in the transport, the next kills queue behind it, and a
    reader that starts late gets every kill once, in order. With several kills due in one turn
    (`per_post`), their frames go out in one gathering sendmsg() and are cut anywhere."""
    client = await make_client(ws_send_buffer=16 * 1024 * 1024)
    hub = client.server.app[hub_key]
    reader, writer = await rawws.connect(client.server.host, client.server.port, rcvbuf=4096)
    await rawws.send_text(writer, SUB)
    opcode, ack = await rawws.read_frame(reader)
    assert json.loads(ack)["action"] == "subscribed"
    [sub] = list(hub._subscribers.values())
    big = sorted(killmails, key=lambda km: len(json.dumps(km)))[-12:]  # frames of 28 KB and more
    posted = partial_at = 0
    # The kernel buffers take a few hundred KB first; then a write is taken in part.
    while (not partial_at or posted < partial_at + 4 * per_post) and posted < 400:
        batch = [
            {**km, "killmail_id": km["killmail_id"] + n * 10**10}
            for n in range(posted, posted + per_post)
            for km in [big[n % len(big)]]
        ]
        resp = await client.post("/api/killmails", data=json.dumps(batch), headers=AUTH)
        assert resp.status == 202
        posted += per_post
        await settle(client)
        await asyncio.sleep(0.01)  # the turn's flush
        if not partial_at and hub.held_bytes(sub) > 0:
            partial_at = posted
    assert partial_at, "the kernel took every frame whole: no partial write"
    seqs = []
    while len(seqs) < posted:
        opcode, payload = await asyncio.wait_for(rawws.read_frame(reader), 10)
        assert opcode == 0x1
        frame = json.loads(payload)  # whole: a torn or interleaved frame does not parse
        assert frame["action"] == "kill"
        seqs.append(frame["seq"])
    assert seqs == list(range(seqs[0], seqs[0] + posted))
    assert not sub.dropped
    writer.transport.abort()
