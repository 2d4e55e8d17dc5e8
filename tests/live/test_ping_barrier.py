"""`{"action":"ping"}` as a barrier: its pong never overtakes a kill published before the ping was
read, even one still waiting for the hub's delivery task (killboard/live/delivery.py)."""

from __future__ import annotations

import asyncio
import json
from collections import deque
from typing import Any

import pytest
from conftest import Client
from test_replay import hold_delivery, store_and_publish

from killboard.web.keys import hub_key


async def test_a_pong_waits_for_the_kills_queued_before_its_ping(
    client: Client, killmails: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = client.server.app
    hub = app[hub_key]
    ws = await client.ws_connect("/ws", compress=15)  # deflated kills: a variant, made late when big
    await ws.send_str(json.dumps({"action": "sub", "channel": "kills"}))
    assert (await ws.receive_json(timeout=5))["action"] == "subscribed"
    task_may_run = hold_delivery(hub, monkeypatch)
    # The biggest real kills (their deflated variant is made in a thread: queued for the task),
    # committed and published as the worker does.
    biggest = sorted(killmails, key=lambda k: len(json.dumps(k)))[-2:]
    seqs = [await store_and_publish(app, km) for km in biggest]
    assert len(hub.late.entries) == 2
    await ws.send_str('{"action":"ping"}')
    with pytest.raises(TimeoutError):
        await ws.receive_json(timeout=0.5)  # the pong waits for the kills, which wait for the task
    await ws.send_str('{"action":"dance"}')  # other answers are not held
    assert (await ws.receive_json(timeout=5))["action"] == "error"
    task_may_run.set()
    frames = [await ws.receive_json(timeout=5) for _ in range(3)]
    assert [f["action"] for f in frames] == ["kill", "kill", "pong"]
    assert [f["seq"] for f in frames[:2]] == seqs
    # With nothing queued for the task, a pong goes at once.
    await ws.send_str('{"action":"ping"}')
    assert (await ws.receive_json(timeout=5))["action"] == "pong"
    assert hub.late.answers == deque() and all(s.answers == 0 for s in hub._subscribers.values())


async def test_held_pongs_count_in_the_sockets_budget(
    make_client: Any, killmails: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await make_client(ws_send_buffer=100)
    app = client.server.app
    hub = app[hub_key]
    ws = await client.ws_connect("/ws", compress=15)
    await ws.send_str(json.dumps({"action": "sub", "channel": "kills"}))
    assert (await ws.receive_json(timeout=5))["action"] == "subscribed"
    monkeypatch.setattr(hub.late, "run", asyncio.Event().wait)  # the delivery task never gets its turn
    await store_and_publish(app, max(killmails, key=lambda k: len(json.dumps(k))))
    for _ in range(5):
        await ws.send_str('{"action":"ping"}')
    closed = await ws.receive(timeout=5)  # two pongs of ~40 bytes fit in 100, the third does not
    assert closed.type.name == "CLOSE" and closed.data == 1013, closed
    assert ws.close_code == 1013 and hub.slow_drops == 1
