"""The `battles` and `battle:<id>` socket channels, with a real WebSocket client."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from aiohttp import ClientWebSocketResponse
from battlefights import fight
from conftest import AUTH, Client, settle, until

from killboard.battles.live import THROTTLE


async def post(client: Client, kills: list[dict[str, Any]]) -> None:
    resp = await client.post("/api/killmails", data=json.dumps(kills), headers=AUTH)
    assert resp.status in (200, 202), await resp.text()
    await settle(client)


async def frames_until(ws: ClientWebSocketResponse, done: Any, timeout: float = 10) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while not got or not done(got[-1]):
            got.append(await ws.receive_json())
    return got


async def test_a_battle_starts_grows_and_resumes_live(client: Client) -> None:
    kills = sorted(fight("30001155"), key=lambda k: (k["killmail_time"], k["killmail_id"]))[:25]
    ws = await client.ws_connect("/ws")
    await ws.send_json({"action": "sub", "channel": "battles"})
    assert (await ws.receive_json())["action"] == "subscribed"
    await post(client, kills[:5])
    [frame] = await frames_until(ws, lambda f: f["action"] == "battle")
    battle = frame["data"]
    assert battle["kill_count"] == 5 and frame["seq"] == battle["seq"]
    battle_id = battle["battle_id"]

    follower = await client.ws_connect("/ws")
    await follower.send_json({"action": "sub", "channel": f"battle:{battle_id}"})
    assert (await follower.receive_json())["action"] == "subscribed"
    started = asyncio.get_running_loop().time()
    for i in range(5, 25, 5):
        await post(client, kills[i : i + 5])
    got = await frames_until(follower, lambda f: f["action"] == "battle" and f["data"]["kill_count"] == 25)
    kill_frames = [f for f in got if f["action"] == "kill"]
    assert [f["data"]["killmail_id"] for f in kill_frames] == [k["killmail_id"] for k in kills[5:25]]
    # Throttled: a burst of four batches gives at most one frame per THROTTLE seconds.
    battle_frames = [f for f in got if f["action"] == "battle"]
    elapsed = asyncio.get_running_loop().time() - started
    assert len(battle_frames) <= 1 + elapsed / THROTTLE
    on_list = await frames_until(ws, lambda f: f["action"] == "battle" and f["data"]["kill_count"] == 25)
    assert all(f["action"] == "battle" for f in on_list)  # the battles channel carries no kill frames

    # Resume: a client that had the battle up to some seq gets the kills after it, then the state.
    cut = kill_frames[9]["seq"]
    back = await client.ws_connect("/ws")
    await back.send_json({"action": "sub", "channel": f"battle:{battle_id}", "since": cut})
    got = await frames_until(back, lambda f: f["action"] == "battle")
    assert got[0]["action"] == "subscribed"
    assert got[1] == {"action": "replay", "channel": f"battle:{battle_id}", "from": cut, "count": 10}
    assert [f["seq"] for f in got if f["action"] == "kill"] == [f["seq"] for f in kill_frames[10:]]
    assert got[-1]["data"]["kill_count"] == 25
    await back.send_json({"action": "sub", "channel": "battles", "since": 0})
    got = await frames_until(back, lambda f: f["action"] == "battle")
    assert [f["action"] for f in got] == ["subscribed", "replay", "battle"]
    for socket in (ws, follower, back):
        await socket.close()


async def test_bad_battle_channels_get_error_frames(client: Client) -> None:
    ws = await client.ws_connect("/ws")
    for channel in ("battle:abc", "battle:0", "battle:", "battle:1" + "0" * 30):
        await ws.send_json({"action": "sub", "channel": channel})
        frame = await ws.receive_json()
        assert frame["action"] == "error" and "battle:" in frame["message"], channel
    await ws.send_json({"action": "sub", "channel": "battles", "since": -1})
    frame = await ws.receive_json()
    assert frame["action"] == "error" and "since" in frame["message"]
    await ws.send_json({"action": "ping"})
    assert (await ws.receive_json())["action"] == "pong"  # still open
    await ws.close()


async def test_a_battle_that_goes_quiet_gets_its_last_frame(client: Client) -> None:
    from killboard.battles.detect import GAP
    from killboard.web.keys import battles_key

    client.server.app[battles_key].channels.end_check = 0.2  # not 30 s: the test would wait
    ws = await client.ws_connect("/ws")
    await ws.send_json({"action": "sub", "channel": "battles"})
    assert (await ws.receive_json())["action"] == "subscribed"
    # Five real kills, moved to a time that leaves their battle 3 s of its 30 quiet minutes.
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - GAP + 3))
    kills = [dict(k, killmail_time=stamp) for k in fight("30002472")[:5]]
    await post(client, kills)
    got = await frames_until(ws, lambda f: f["action"] == "battle")
    assert got[-1]["data"]["ongoing"] is True
    got = await frames_until(ws, lambda f: f["action"] == "battle" and not f["data"]["ongoing"], timeout=15)
    assert got[-1]["data"]["kill_count"] == 5
    await ws.close()


async def test_an_ongoing_battle_without_news_sends_no_frames(client: Client) -> None:
    from killboard.web.keys import battles_key

    client.server.app[battles_key].channels.end_check = 0.1
    ws = await client.ws_connect("/ws")
    await ws.send_json({"action": "sub", "channel": "battles"})
    assert (await ws.receive_json())["action"] == "subscribed"
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))
    await post(client, [dict(k, killmail_time=stamp) for k in fight("30002472")[:5]])
    got = await frames_until(ws, lambda f: f["action"] == "battle")
    assert got[-1]["data"]["ongoing"] is True
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(1.0):  # ten end checks
            await ws.receive_json()
    await ws.close()


async def test_a_battle_nobody_follows_is_tracked_without_its_summary(client: Client) -> None:
    """Without followers only whether a battle goes on is kept (for its end check), from its row:
    its summary is not worked out for nobody. A follower later gets it as usual."""
    from killboard.web.keys import battles_key

    channels = client.server.app[battles_key].channels
    summarize, asked = channels.summarize, []

    async def counted(battle_id: int) -> Any:
        asked.append(battle_id)
        return await summarize(battle_id)

    channels.summarize = counted
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))
    kills = [dict(k, killmail_time=stamp) for k in fight("30002472")[:6]]
    await post(client, kills[:5])

    async def tracked() -> bool:
        return bool(channels.ongoing)

    await until(tracked)
    assert not channels.dirty and asked == []
    [battle_id] = channels.ongoing

    ws = await client.ws_connect("/ws")
    await ws.send_json({"action": "sub", "channel": "battles"})
    assert (await ws.receive_json())["action"] == "subscribed"
    await post(client, kills[5:])
    got = await frames_until(ws, lambda f: f["action"] == "battle", timeout=THROTTLE + 10)
    assert got[-1]["data"]["battle_id"] == battle_id and got[-1]["data"]["kill_count"] == 6
    assert got[-1]["data"]["ongoing"] is True and asked == [battle_id]
    await ws.close()
