"""Resume after reconnect (`since`), with real sockets while kills keep arriving, and the live
age cut-off (stored, not pushed, replayed)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from conftest import Client, settle, until
from test_topics import drain
from test_ws import post, with_id_offset

from killboard.ingest.pipeline import build_kill
from killboard.kill.enrich import enrich
from killboard.kill.topics import kill_facts
from killboard.kill.validate import parse_submission
from killboard.live.replay import Replays, StoreLog
from killboard.web.keys import hub_key, prices_key, replays_key, static_key, store_key


async def sub(
    ws: aiohttp.ClientWebSocketResponse, channel: str, since: int | None = None, live: list[Any] | None = None
) -> dict[str, Any]:
    """Subscribe; with `since`, return the replay frame that follows the ack. Kill frames of the
    socket's other channels that arrive meanwhile go to `live`."""
    message: dict[str, Any] = {"action": "sub", "channel": channel}
    if since is not None:
        message["since"] = since
    await ws.send_str(json.dumps(message))

    async def next_control() -> dict[str, Any]:
        while True:
            frame = await ws.receive_json(timeout=5)
            if frame["action"] != "kill":
                return frame
            assert live is not None, frame
            live.append(frame)

    assert await next_control() == {"action": "subscribed", "channels": [channel]}
    if since is None:
        return {}
    replay = await next_control()
    assert replay["action"] == "replay", replay
    return replay


async def post_slowly(client: Client, kills: list[dict[str, Any]], size: int) -> None:
    """Kills keep arriving: small batches, one after the other."""
    for i in range(0, len(kills), size):
        await post(client, kills[i : i + size])
        await asyncio.sleep(0.01)


async def all_kills(client: Client) -> list[dict[str, Any]]:
    resp = await client.get("/api/killmails?after=0&limit=500")
    return (await resp.json())["killmails"]


async def test_resume_has_no_gap_and_no_duplicate_while_kills_arrive(
    make_client: Any, killmails: list[dict[str, Any]]
) -> None:
    client = await make_client(batch_size=3)
    await post(client, killmails + with_id_offset(killmails, 10**10))
    await settle(client)
    since = 50
    ws = await client.ws_connect("/ws")
    arriving = asyncio.create_task(post_slowly(client, with_id_offset(killmails, 2 * 10**10), 3))
    await asyncio.sleep(0.02)  # the first of them are on their way
    replay = await sub(ws, "kills", since)
    await arriving
    await settle(client)
    frames = await drain(ws)
    last = 3 * len(killmails)
    assert replay == {"action": "replay", "channel": "kills", "recovered": True, "from": since, "to": replay["to"]}
    # Some kills came after the replay began: they were delivered live, after the replayed ones.
    assert 2 * len(killmails) <= replay["to"] < last
    assert [f["seq"] for f in frames] == list(range(since + 1, last + 1))


async def test_filtered_resume_next_to_a_live_channel(make_client: Any, killmails: list[dict[str, Any]]) -> None:
    client = await make_client(batch_size=2)
    await post(client, killmails)
    await settle(client)
    first = {k["killmail_id"]: k for k in await all_kills(client)}
    ws = await client.ws_connect("/ws")
    await sub(ws, "solo")  # live only: the stored kills were published before it existed
    since = 20
    third = with_id_offset(killmails, 10**10)
    # One solo nullsec kill arrives live first: the replay must not send it again.
    both = next(
        i
        for i, km in enumerate(third)
        if first[killmails[i]["killmail_id"]]["is_solo"] and first[killmails[i]["killmail_id"]]["system_security"] < 0
    )
    await post(client, third[both])
    await settle(client)
    before = await drain(ws)
    assert [f["data"]["killmail_id"] for f in before] == [third[both]["killmail_id"]]
    arriving = asyncio.create_task(post_slowly(client, third[:both] + third[both + 1 :], 2))
    await asyncio.sleep(0.02)
    replay = await sub(ws, "nullsec", since, live=before)
    await arriving
    await settle(client)
    after = await drain(ws)
    frames = before + after
    stored = await all_kills(client)
    nullsec = {k["seq"] for k in stored if k["seq"] > since and k["security_class"] in ("nullsec", "pochven")}
    solo_live = {k["seq"] for k in stored if k["seq"] > len(killmails) and k["is_solo"]}
    seqs = [f["seq"] for f in frames]
    assert replay["recovered"] is True
    assert len(seqs) == len(set(seqs)), "a kill arrived twice"
    assert set(seqs) == nullsec | solo_live
    assert nullsec - solo_live and solo_live - nullsec  # both channels contributed
    # From the replay on, the resumed channel's kills come in order.
    ordered = [f["seq"] for f in after if f["seq"] in nullsec]
    assert ordered == sorted(ordered)


async def test_past_the_cap_says_not_recovered_and_rest_fills_the_gap(
    make_client: Any, killmails: list[dict[str, Any]]
) -> None:
    client = await make_client(ws_replay_max=10)
    await post(client, killmails)
    await settle(client)
    ws = await client.ws_connect("/ws")
    replay = await sub(ws, "kills", 5)
    last = len(killmails)
    assert replay == {"action": "replay", "channel": "kills", "recovered": False, "from": last - 10, "to": last}
    frames = await drain(ws)
    assert [f["seq"] for f in frames] == list(range(last - 10 + 1, last + 1))
    # The client pages through the REST API for the part the replay left out.
    paged: list[int] = []
    after = 5
    while after < replay["from"]:
        resp = await client.get(f"/api/killmails?after={after}&limit=25")
        body = await resp.json()
        paged += [k["seq"] for k in body["killmails"] if k["seq"] <= replay["from"]]
        after = body["next_after"]
    assert paged + [f["seq"] for f in frames] == list(range(6, last + 1))


async def test_since_beyond_the_last_kill_replays_nothing_then_goes_live(
    client: Client, killmails: list[dict[str, Any]]
) -> None:
    await post(client, killmails[:3])
    await settle(client)
    ws = await client.ws_connect("/ws")
    replay = await sub(ws, "kills", 3)
    assert replay == {"action": "replay", "channel": "kills", "recovered": True, "from": 3, "to": 3}
    await post(client, killmails[3])
    await settle(client)
    assert [f["seq"] for f in await drain(ws)] == [4]


async def test_old_kills_are_stored_not_pushed_live_but_replayed(
    make_client: Any, killmails: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    client = await make_client(live_max_age=3600)
    ws = await client.ws_connect("/ws")
    await sub(ws, "kills")
    old = killmails[0]  # the bundled kills are years old
    fresh = {
        **killmails[1],
        "killmail_id": killmails[1]["killmail_id"] + 10**10,
        "killmail_time": datetime.fromtimestamp(time.time() - 60, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    with caplog.at_level(logging.INFO, logger="killboard.ingest.pipeline"):
        await post(client, [old, fresh])
        await settle(client)
    frames = await drain(ws)
    assert [f["data"]["killmail_id"] for f in frames] == [fresh["killmail_id"]]
    reasons = [r.getMessage() for r in caplog.records if "not pushed live" in r.getMessage()]
    assert reasons == [f"kill {old['killmail_id']} stored but not pushed live: kill time older than 3600 s"]
    resp = await client.get(f"/api/killmails/{old['killmail_id']}")
    assert resp.status == 200
    # A client that resumes gets it.
    late = await client.ws_connect("/ws")
    await sub(late, "kills", 0)
    assert [f["data"]["killmail_id"] for f in await drain(late)] == [old["killmail_id"], fresh["killmail_id"]]


async def test_a_kill_committed_before_the_replay_and_published_during_it_arrives_once(
    client: Client, killmails: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tightest race: the worker has committed a kill but not yet published it when the
    replay starts; it is published while the replay reads. The replay reads it, the socket also
    holds it live: it must arrive once, in order."""
    await post(client, killmails[:10])
    await settle(client)
    app = client.server.app
    store, hub = app[store_key], app[hub_key]
    submission = parse_submission(killmails[10])
    kill = enrich(submission, app[static_key], {}, app[prices_key])
    new = build_kill(submission, kill)
    [(seq, _)] = await store.save_kills([new])  # committed, as the worker does first
    real_read = store.by_seqs
    pending = [seq]

    async def read_then_publish(seqs: list[int]) -> list[Any]:
        rows = await real_read(seqs)
        while pending:  # ... and the worker resumes and publishes while the replay reads
            hub.publish(pending.pop(), new.body, kill_facts(kill))
        return rows

    monkeypatch.setattr(store, "by_seqs", read_then_publish)
    ws = await client.ws_connect("/ws")
    replay = await sub(ws, "kills", 5)
    assert replay["to"] == seq == 11
    assert [f["seq"] for f in await drain(ws)] == [6, 7, 8, 9, 10, 11]
    assert not pending


async def test_concurrent_replays_share_the_rendered_frames(make_client: Any, killmails: list[dict[str, Any]]) -> None:
    """Ten sockets replay the same 82 kills at once: each stored kill is rendered once (a
    replay waits for the frames another is rendering), every socket gets all of them in order,
    and the cache is emptied when the last replay ends."""
    client = await make_client()
    await post(client, killmails)
    await settle(client)
    replays = client.server.app[replays_key]
    sockets = [await client.ws_connect("/ws") for _ in range(10)]
    await asyncio.gather(*(sub(ws, "kills", 0) for ws in sockets))
    frames = [await drain(ws) for ws in sockets]
    for got in frames:
        assert [f["seq"] for f in got] == list(range(1, len(killmails) + 1))
    assert replays.renders == len(killmails)
    assert replays.running == 0 and len(replays.cache) == 0 and replays.cache.nbytes == 0
    # Narrower channels match on the same frames (their match keys decoded from them).
    solo = [await client.ws_connect("/ws") for _ in range(3)]
    await asyncio.gather(*(sub(ws, "solo", 0) for ws in solo))
    expected = [f["seq"] for f in frames[0] if f["data"]["is_solo"]]
    assert expected and [[f["seq"] for f in await drain(ws)] for ws in solo] == [expected] * 3
    assert replays.renders == 2 * len(killmails)


async def test_a_replay_waiting_on_a_renderer_that_went_away_renders_for_itself(
    client: Client, killmails: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    await post(client, killmails[:10])
    await settle(client)
    store = client.server.app[store_key]
    replays = Replays(4)
    real_read = store.by_seqs
    calls: list[list[int]] = []
    never = asyncio.Event()

    async def first_read_hangs(seqs: list[int]) -> list[Any]:
        calls.append(list(seqs))
        if len(calls) == 1:
            await never.wait()  # the first replay's socket goes away while it renders
        return await real_read(seqs)

    monkeypatch.setattr(store, "by_seqs", first_read_hangs)
    source = StoreLog(store)
    first = asyncio.create_task(replays.page(source, 0, 10))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(replays.page(source, 0, 10))  # waits for the first one's frames
    await asyncio.sleep(0.05)
    assert len(calls) == 1 and not second.done()
    first.cancel()
    page = await asyncio.wait_for(second, 5)
    assert [seq for seq, _ in page] == list(range(1, 11))
    assert [json.loads(entry.frame)["seq"] for _, entry in page] == list(range(1, 11))
    assert calls == [list(range(1, 11))] * 2


def hold_delivery(hub: Any, monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """The hub's delivery task held back until the event returned is set (a loop busy with
    other work): what a big kill's variants or a slice of many sockets queue for it waits."""
    may_run = asyncio.Event()
    real_task = hub.late.run

    async def held_back() -> None:
        await may_run.wait()
        await real_task()

    monkeypatch.setattr(hub.late, "run", held_back)
    return may_run


async def store_and_publish(app: Any, km: dict[str, Any]) -> int:
    """A real killmail enriched, committed and published as the worker does; its seq."""
    submission = parse_submission(km)
    kill = enrich(submission, app[static_key], {}, app[prices_key])
    new = build_kill(submission, kill)
    [(seq, _)] = await app[store_key].save_kills([new])
    app[hub_key].publish(seq, new.body, kill_facts(kill))
    return int(seq)


async def test_a_kill_queued_before_a_replay_and_looked_up_after_it_arrives_once(
    make_client: Any, killmails: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Delivery in slices (many sockets): a kill published behind a queued one has its sockets
    looked up only when the delivery task reaches it. A socket that subscribed with `since`
    meanwhile, and whose replay already sent it that kill, must not get it again."""
    client = await make_client()
    await post(client, killmails[:10])
    await settle(client)
    app = client.server.app
    hub = app[hub_key]
    hub.send_slice = 2  # four sockets are "many"
    others = [await client.ws_connect("/ws") for _ in range(4)]
    for ws in others:
        await sub(ws, "kills")
    task_may_run = hold_delivery(hub, monkeypatch)
    # Committed and published as the worker does: queued.
    seqs = [await store_and_publish(app, km) for km in killmails[10:12]]
    assert [entry.groups is None for entry in hub.late.entries] == [False, True]
    late = await client.ws_connect("/ws")
    replay = await sub(late, "kills", 10)
    assert replay["to"] == seqs[-1]
    replayed = []
    while len(replayed) < 2:
        replayed.append((await late.receive_json(timeout=5))["seq"])
    assert replayed == seqs
    task_may_run.set()

    async def delivered() -> bool:
        return not (hub.late.entries or hub._due)

    await until(delivered)
    assert [f["seq"] for f in await drain(late)] == [], "a kill its replay sent came again live"
    for ws in others:
        assert [f["seq"] for f in await drain(ws)] == seqs
