"""Keepalive and limits on the WebSocket, with real sockets: ping/pong, the control-message rate
(error, then 1008), the socket cap (1013), the Origin allow-list."""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import aiohttp
import pytest
from conftest import settle, told
from test_ws import subscribe

from killboard.config import from_env
from killboard.web.keys import hub_key

PING = json.dumps({"action": "ping"})


async def test_ping_gets_pong_with_the_server_time(make_client: Any) -> None:
    client = await make_client()
    ws = await client.ws_connect("/ws")
    before = time.time()
    await ws.send_str(PING)
    pong = await ws.receive_json(timeout=5)
    assert pong["action"] == "pong" and set(pong) == {"action", "time"}
    assert before - 0.01 <= pong["time"] <= time.time() + 0.01


async def test_idle_socket_stays_open_while_it_answers_heartbeats(make_client: Any) -> None:
    client = await make_client(ws_heartbeat=0.1)
    ws = await client.ws_connect("/ws")  # aiohttp's client answers the server's pings by itself
    await subscribe(ws)
    with pytest.raises(TimeoutError):
        # Ten heartbeats, and nothing else. (receive(timeout=) restarts its clock on every ping.)
        await asyncio.wait_for(ws.receive(), 1.0)
    assert not ws.closed
    await ws.send_str(PING)
    assert (await ws.receive_json(timeout=5))["action"] == "pong"


async def test_flooding_gets_an_error_then_close_1008(make_client: Any) -> None:
    client = await make_client(ws_control_rate=5, ws_control_burst=5)
    ws = await client.ws_connect("/ws")
    for _ in range(40):
        await ws.send_str(PING)
    replies = []
    while True:
        msg = await ws.receive(timeout=5)
        if msg.type is not aiohttp.WSMsgType.TEXT:
            break
        replies.append(json.loads(msg.data))
    assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == aiohttp.WSCloseCode.POLICY_VIOLATION
    assert msg.extra == "too many messages"
    actions = [r["action"] for r in replies]
    # The burst is answered, then one error, and nothing more before the close.
    assert 5 <= actions.count("pong") <= 7
    assert actions[-1] == "error" and actions.count("error") == 1
    assert "too many messages: the limit is 5 per second (bursts of 5)" in replies[-1]["message"]


async def test_a_client_within_the_rate_is_never_limited(make_client: Any) -> None:
    client = await make_client(ws_control_rate=50, ws_control_burst=3)
    ws = await client.ws_connect("/ws")
    for _ in range(15):
        await ws.send_str(PING)
        assert (await ws.receive_json(timeout=5))["action"] == "pong"
        await asyncio.sleep(0.03)


async def test_socket_cap_closes_the_next_one_with_1013(make_client: Any) -> None:
    client = await make_client(ws_max_clients=2)
    first = await client.ws_connect("/ws")
    second = await client.ws_connect("/")
    third = await client.ws_connect("/ws")
    msg = await third.receive(timeout=5)
    assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == aiohttp.WSCloseCode.TRY_AGAIN_LATER
    assert "try again later" in msg.extra
    for ws in (first, second):  # the others are untouched
        await ws.send_str(PING)
        assert (await ws.receive_json(timeout=5))["action"] == "pong"
    await first.close()
    for _ in range(100):  # a place frees up once the server has let go of the first
        fourth = await client.ws_connect("/ws")
        await fourth.send_str(PING)
        msg = await fourth.receive(timeout=5)
        if msg.type is aiohttp.WSMsgType.TEXT:
            break
        await asyncio.sleep(0.02)
    assert json.loads(msg.data)["action"] == "pong"


async def test_origin_allow_list(make_client: Any) -> None:
    client = await make_client(ws_allowed_origins=("https://good.example",))
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/ws", headers={"Origin": "https://evil.example"})
    assert refused.value.status == 403
    resp = await client.get("/ws", headers={"Origin": "https://evil.example", "Upgrade": "websocket"})
    assert resp.status == 403 and (await resp.json())["error"].startswith("origin not allowed")
    host = f"http://{client.server.host}:{client.server.port}"
    for headers in ({"Origin": "https://good.example"}, {"Origin": host}, {}):  # allowed, same origin, a bot
        ws = await client.ws_connect("/ws", headers=headers)
        await ws.send_str(PING)
        assert (await ws.receive_json(timeout=5))["action"] == "pong", headers
        await ws.close()


def test_limits_come_from_the_environment() -> None:
    config = from_env(
        {
            "KILLBOARD_WS_MAX_CLIENTS": "7",
            "KILLBOARD_WS_MAX_CHANNELS": "8",
            "KILLBOARD_WS_MAX_CHANNEL_LENGTH": "90",
            "KILLBOARD_WS_CONTROL_RATE": "2.5",
            "KILLBOARD_WS_CONTROL_BURST": "9",
            "KILLBOARD_WS_REPLAY_MAX": "50",
            "KILLBOARD_WS_SEND_BUFFER": "1048576",
            "KILLBOARD_WS_REPLAY_CONCURRENCY": "2",
            "KILLBOARD_WS_ORIGINS": "https://a.example/, https://b.example",
        }
    )
    assert (config.ws_max_clients, config.ws_max_channels, config.ws_max_channel_length) == (7, 8, 90)
    assert (config.ws_control_rate, config.ws_control_burst, config.ws_replay_max) == (2.5, 9, 50)
    assert (config.ws_send_buffer, config.ws_replay_concurrency) == (1048576, 2)
    assert config.ws_allowed_origins == ("https://a.example", "https://b.example")
    with pytest.raises(SystemExit, match="KILLBOARD_WS_CONTROL_RATE must be a number"):
        from_env({"KILLBOARD_WS_CONTROL_RATE": "fast"})
    for name in ("KILLBOARD_WS_SEND_BUFFER", "KILLBOARD_WS_REPLAY_CONCURRENCY"):
        with pytest.raises(SystemExit, match=f"{name} must be between 1 and .*, got 0"):
            from_env({name: "0"})


async def test_a_replay_costs_ten_messages(make_client: Any) -> None:
    client = await make_client(ws_control_rate=0.5, ws_control_burst=12)
    ws = await client.ws_connect("/ws")
    await ws.send_str(json.dumps({"action": "sub", "channel": "kills", "since": 0}))
    assert (await ws.receive_json(timeout=5))["action"] == "subscribed"
    assert (await ws.receive_json(timeout=5))["action"] == "replay"
    await ws.send_str(json.dumps({"action": "sub", "channel": "solo", "since": 0}))
    reply = await ws.receive_json(timeout=5)
    assert reply["action"] == "error" and reply["message"].startswith("too many replays"), reply


async def test_lone_surrogate_gets_an_error_frame_and_200_bad_messages_log_a_few_lines(
    make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client = await make_client()
    ws = await client.ws_connect("/ws")
    # A lone surrogate can only arrive as a JSON escape (the frame itself must be valid UTF-8).
    bad = [
        '{"action":"sub","channel":"\\ud800"}',
        '{"action":"unsub","channel":"kills\\udfff"}',
        '{"action":"\\ud800"}',
        '{"action":"sub","channel":"kills","since":0,"x\\ud83d":1}',
    ]
    with caplog.at_level("INFO"):
        caplog.clear()  # what start-up logged (migrations, when a test before set INFO) is not this client's
        for n in range(200):
            await ws.send_str(bad[n % len(bad)])
            reply = await ws.receive_json(timeout=5)
            assert reply["action"] == "error", (n, reply)
        await ws.send_str(PING)
        assert (await ws.receive_json(timeout=5))["action"] == "pong"  # the socket is fine
        assert "surrogate" in reply["message"]
        await ws.close()
        for _ in range(100):  # the handler's last line, once it has seen the close
            if any("not logged" in r.getMessage() for r in caplog.records if "closed after" in r.getMessage()):
                break
            await asyncio.sleep(0.02)
    lines = [r for r in caplog.records if r.name.startswith("killboard")]
    assert not [r for r in lines if r.levelno >= 40 or r.exc_info], "a client message caused a traceback"
    assert 3 <= len(lines) <= 6, [r.getMessage() for r in lines]
    assert sum(len(r.getMessage()) for r in lines) < 2000
    assert "200 errors (196 not logged)" in lines[-1].getMessage()


async def test_subscriptions_past_a_sockets_byte_budget_get_an_error_frame(make_client: Any) -> None:
    """KILLBOARD_WS_SUB_BYTES: channels are counted in bytes (a condition of 8 parts costs more
    than one of 1); past the budget the sub is refused with an error frame, the socket stays
    open, and an unsub makes room again."""
    client = await make_client(ws_sub_bytes=16 * 1024)
    ws = await client.ws_connect("/ws")
    big = ["&".join(f"character:{9_000_000_000_000_000_000 + n * 8 + k}" for k in range(8)) for n in range(20)]
    accepted = []
    for channel in big:
        await ws.send_str(json.dumps({"action": "sub", "channel": channel}))
        reply = await ws.receive_json(timeout=5)
        if reply["action"] == "subscribed":
            accepted.append(channel)
        else:
            assert reply["action"] == "error" and "over budget" in reply["message"], reply
            break
    assert 1 < len(accepted) < len(big)
    hub = client.server.app[hub_key]
    [sub] = hub._subscribers.values()
    assert sub.sub_bytes <= 16 * 1024
    # Short channels cost less: more of them fit than of the long ones.
    await ws.send_str(json.dumps({"action": "unsub", "channel": accepted[0]}))
    assert (await ws.receive_json(timeout=5))["action"] == "unsubscribed"
    await subscribe(ws, {"action": "sub", "channel": "solo"})
    await subscribe(ws, {"action": "sub", "channel": "victim.123"})
    await ws.close()
    assert hub.sub_bytes == 0


async def test_subscriptions_past_the_servers_total_get_an_error_frame(make_client: Any) -> None:
    """KILLBOARD_WS_SUB_TOTAL: all sockets' subscriptions together; past it an error frame, and
    room again once a socket that held them closes."""
    client = await make_client(ws_sub_total=8 * 1024)
    hub = client.server.app[hub_key]
    sockets = [await client.ws_connect("/ws") for _ in range(3)]
    await subscribe(sockets[0], {"action": "sub", "channel": "solo"})
    refused = None
    for n in range(100):
        await sockets[1].send_str(json.dumps({"action": "sub", "channel": f"victim.{n + 1}"}))
        reply = await sockets[1].receive_json(timeout=5)
        if reply["action"] == "error":
            refused = reply["message"]
            break
    assert refused is not None and "subscriptions are full" in refused, refused
    assert hub.sub_bytes <= 8 * 1024
    health = await (await client.get("/health")).json()
    assert health["subscription_bytes"] == hub.sub_bytes and health["subscriptions_refused"] == 1
    await sockets[1].close()
    await settle(client)
    await subscribe(sockets[2], {"action": "sub", "channel": "victim.1"})
    for ws in sockets:
        await ws.close()
    await settle(client)
    assert hub.sub_bytes == 0


CROWD = 200
ERRORS = re.compile(r"^had (\d+) more websocket client errors \((.*)\) in the last 1 s$")


async def test_a_crowd_of_broken_clients_logs_a_few_lines_and_an_exact_summary(
    make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """200 clients each sending two bad messages: not 400 lines (a few per socket is the cap of one
    client, not of a crowd), but five and a summary a second counting every error by its kind."""
    client = await make_client()
    # A session of their own: the test client's pools 100 connections per host.
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    sockets = [await session.ws_connect(client.make_url("/ws")) for _ in range(CROWD)]
    with caplog.at_level("INFO"):
        caplog.clear()
        for ws in sockets:
            await ws.send_str('{"action":"dance"}')
            await ws.send_str("[1, 2]")
        for ws in sockets:
            for _ in range(2):
                assert (await ws.receive_json(timeout=5))["action"] == "error"
        await asyncio.sleep(1.5)  # the summary comes a second after the first line left out
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("killboard")]

    def kind(line: str) -> str:
        return "unknown action" if "unknown action" in line else "expected a JSON object, got list"

    alone, summaries, by_kind = told(lines, "websocket client error: ", ERRORS, kind)
    assert 5 <= alone <= 6 and 1 <= summaries <= 3, lines
    assert by_kind == {"unknown action": CROWD, "expected a JSON object, got list": CROWD}
    for ws in sockets:
        await ws.close()
    await session.close()
