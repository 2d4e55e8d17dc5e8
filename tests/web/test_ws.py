"""The WebSocket protocol of the spec, with real sockets against the real app."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import rawws
from conftest import AUTH, Client, settle

from killboard.kill.staticdata import StaticData
from killboard.web.keys import hub_key

SUB = {"action": "sub", "channel": "kills"}
UNSUB = {"action": "unsub", "channel": "kills"}


async def post(client: Client, body: Any) -> dict[str, Any]:
    resp = await client.post("/api/killmails", data=json.dumps(body), headers=AUTH)
    assert resp.status == 202, await resp.text()
    return await resp.json()


async def subscribe(ws: aiohttp.ClientWebSocketResponse, message: dict[str, Any] = SUB) -> None:
    await ws.send_str(json.dumps(message))
    ack = await ws.receive_json(timeout=5)
    assert ack == {"action": "subscribed", "channels": [message["channel"]]}


async def next_kill(ws: aiohttp.ClientWebSocketResponse, timeout: float = 10) -> dict[str, Any]:
    """What the spec's onmessage does: parse, keep `kill` messages that carry data."""
    while True:
        msg = await ws.receive(timeout=timeout)
        assert msg.type is aiohttp.WSMsgType.TEXT, msg  # a browser must get text, not a Blob
        message = json.loads(msg.data)
        if message.get("action") == "kill" and message.get("data"):
            return message


async def test_spec_client_receives_every_real_killmail(
    client: Client, killmails: list[dict[str, Any]], static: StaticData
) -> None:
    # The spec connects at the root; /ws is the other documented address.
    root = await client.ws_connect("/")
    at_ws = await client.ws_connect("/ws")
    for ws in (root, at_ws):
        await subscribe(ws)
    await post(client, killmails)
    for ws in (root, at_ws):
        got: dict[int, dict[str, Any]] = {}
        seqs = []
        while len(got) < len(killmails):
            message = await next_kill(ws)
            seqs.append(message["seq"])
            got[message["data"]["killmail_id"]] = message["data"]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(killmails)
        for km in killmails:
            kill = got[km["killmail_id"]]
            ship = static.types[km["victim"]["ship_type_id"]]
            assert kill["victim"]["ship_name"] == static.type_names(ship.type_id)
            assert kill["victim"]["ship_group_name"] == static.groups[ship.group_id].names
            system = static.systems[km["solar_system_id"]]
            assert kill["system_name"] == system.name
            assert kill["region_name"] == static.regions[system.region_id].names
            assert kill["kill_time"].replace("Z", "") in km["killmail_time"].replace("Z", "")
            assert len(kill["attackers"]) == len(km["attackers"])
        await ws.close()


async def test_unsub_stops_delivery(client: Client, killmails: list[dict[str, Any]]) -> None:
    a = await client.ws_connect("/ws")
    b = await client.ws_connect("/ws")
    await subscribe(a)
    await subscribe(b)
    await b.send_str(json.dumps(UNSUB))
    assert await b.receive_json(timeout=5) == {"action": "unsubscribed", "channels": ["kills"]}
    first, second = killmails[0], killmails[1]
    await post(client, first)
    assert (await next_kill(a))["data"]["killmail_id"] == first["killmail_id"]
    await subscribe(b)
    await post(client, second)
    # Had b still been subscribed, `first` would be waiting ahead of `second`.
    assert (await next_kill(b))["data"]["killmail_id"] == second["killmail_id"]


async def test_duplicates_are_broadcast_once(client: Client, killmails: list[dict[str, Any]]) -> None:
    ws = await client.ws_connect("/ws")
    await subscribe(ws)
    x, y = killmails[10], killmails[11]
    await post(client, x)
    await settle(client)
    await post(client, [x, x])
    await post(client, y)
    assert (await next_kill(ws))["data"]["killmail_id"] == x["killmail_id"]
    assert (await next_kill(ws))["data"]["killmail_id"] == y["killmail_id"]


async def test_garbage_gets_error_frames_and_the_socket_stays_open(
    client: Client, killmails: list[dict[str, Any]]
) -> None:
    ws = await client.ws_connect("/ws")
    cases = [
        ("hello", "not valid JSON"),
        ("[1,2]", "expected a JSON object, got list"),
        ('{"action":"dance"}', "unknown action 'dance'"),
        ('{"action":"sub"}', "channel: required string"),
        ('{"action":"sub","channel":"nope"}', "unknown channel 'nope'"),
        ('{"action":"sub","channel":7}', "channel: required string"),
    ]
    for text, expected in cases:
        await ws.send_str(text)
        reply = await ws.receive_json(timeout=5)
        assert reply["action"] == "error" and expected in reply["message"], (text, reply)
    await ws.send_bytes(b"\x00\x01")
    reply = await ws.receive_json(timeout=5)
    assert reply == {"action": "error", "message": "binary frames are not accepted: send JSON text frames"}
    await subscribe(ws)
    await post(client, killmails[0])
    assert (await next_kill(ws))["data"]["killmail_id"] == killmails[0]["killmail_id"]


async def test_oversized_client_frame_closes_with_1009(client: Client) -> None:
    ws = await client.ws_connect("/ws")
    await ws.send_str(json.dumps({"action": "sub", "channel": "x" * 10_000}))
    msg = await ws.receive(timeout=5)
    assert msg.type is aiohttp.WSMsgType.CLOSE
    assert msg.data == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
    assert len(client.server.app[hub_key]) == 0 or await _eventually_no_clients(client)


async def _eventually_no_clients(client: Client) -> bool:
    for _ in range(100):
        if len(client.server.app[hub_key]) == 0:
            return True
        await asyncio.sleep(0.02)
    return False


async def test_slow_reader_does_not_delay_others_and_is_dropped(
    make_client: Any, killmails: list[dict[str, Any]]
) -> None:
    client = await make_client(ws_send_queue=16, batch_size=1)
    host, port = client.server.host, client.server.port
    # The laggard: a tiny receive window, and it never reads after subscribing.
    _reader, writer = await rawws.connect(host, port, rcvbuf=4096)
    await rawws.send_text(writer, json.dumps(SUB))
    fast = await client.ws_connect("/ws")
    await subscribe(fast)
    hub = client.server.app[hub_key]
    for _ in range(100):
        if hub.subscribed_count() == 2:
            break
        await asyncio.sleep(0.01)

    assert hub.subscribed_count() == 2
    # The kernel buffers ~4 MB per socket before a writer blocks, more than the 82 real kills
    # (~2.4 MB as frames): send them four times over, each copy under a new id.
    rounds = [with_id_offset(killmails, n * 10**10) for n in range(4)]
    started = time.monotonic()
    for batch in rounds:
        await post(client, batch)
    received = 0
    while received < 4 * len(killmails):
        await next_kill(fast, timeout=10)
        received += 1
    elapsed = time.monotonic() - started
    # The laggard overflowed its own queue and was closed; nobody waited for it.
    assert hub.slow_drops == 1
    assert await _eventually_clients(client, 1)
    assert elapsed < 10
    writer.close()


def with_id_offset(killmails: list[dict[str, Any]], offset: int) -> list[dict[str, Any]]:
    return [{**km, "killmail_id": km["killmail_id"] + offset} for km in killmails]


async def _eventually_clients(client: Client, n: int) -> bool:
    for _ in range(300):
        if len(client.server.app[hub_key]) == n:
            return True
        await asyncio.sleep(0.02)
    return False


async def test_shutdown_closes_sockets_with_1001(make_client: Any) -> None:
    client = await make_client()
    ws = await client.ws_connect("/ws")
    await subscribe(ws)
    closing = asyncio.create_task(ws.receive(timeout=10))
    await client.server.close()
    msg = await closing
    assert msg.type is aiohttp.WSMsgType.CLOSE
    assert msg.data == aiohttp.WSCloseCode.GOING_AWAY
