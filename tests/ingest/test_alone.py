"""A kill posted alone while the worker is idle is stored by its request, without the inbox: it
must be durable before the answer, stored and broadcast once, in order with queued kills, and an
answer must never wait for ESI."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from conftest import AUTH, Client, settle

from killboard.ingest.pipeline import Stored
from killboard.kill.validate import parse_submission
from killboard.web.keys import pipeline_key, store_key, stored_hooks_key


def renumbered(km: dict[str, Any], offset: int) -> dict[str, Any]:
    return {**km, "killmail_id": km["killmail_id"] + offset}


async def test_a_kill_submitted_alone_is_stored_when_submit_returns_and_never_enters_the_inbox(
    client: Client, killmails: list[dict[str, Any]]
) -> None:
    pipeline = client.server.app[pipeline_key]
    store = client.server.app[store_key]
    seen: list[Stored] = []
    client.server.app[stored_hooks_key].append(seen.append)
    sub = parse_submission(killmails[0])

    admission = await pipeline.submit([sub], source="http")

    # Checked before anything else runs on the loop: through the inbox, the worker would not
    # even have woken up yet (on main this is 0 and [], the kill still in the inbox).
    assert admission.accepted == [sub.killmail_id] and admission.duplicates == []
    assert pipeline.processed == 1
    assert [s.kill.killmail_id for s in seen] == [sub.killmail_id]
    assert await store.inbox_count() == 0
    assert await store.count() == 1
    again = await pipeline.submit([sub], source="http")
    assert again.accepted == [] and again.duplicates == [sub.killmail_id]
    assert await store.count() == 1 and len(seen) == 1


async def test_concurrent_single_kill_posts_are_stored_and_broadcast_once_in_seq_order(
    client: Client, killmails: list[dict[str, Any]]
) -> None:
    # The first goes alone; the others arrive while it is in flight and take the inbox and the
    # worker, whose commits wait their turn: hooks see each kill once, in seq order.
    seen: list[int] = []
    client.server.app[stored_hooks_key].append(lambda stored: seen.append(stored.seq))
    async with client.ws_connect("/ws") as ws:
        await ws.send_json({"action": "sub", "channel": "kills"})
        assert (await ws.receive_json(timeout=5))["action"] == "subscribed"
        kills = [renumbered(km, 10**10) for km in killmails[:12]]
        posts = [client.post("/api/killmails", data=json.dumps(km), headers=AUTH) for km in kills]
        answers = await asyncio.gather(*posts)
        assert all(resp.status == 202 for resp in answers)
        accepted = [i for resp in answers for i in (await resp.json())["accepted"]]
        assert sorted(accepted) == sorted(km["killmail_id"] for km in kills)
        await settle(client)
        frames = [await ws.receive_json(timeout=5) for _ in kills]
    assert seen == sorted(seen) and len(seen) == len(kills)
    assert [f["seq"] for f in frames] == seen
    assert sorted(f["data"]["killmail_id"] for f in frames) == sorted(accepted)
    store = client.server.app[store_key]
    assert await store.count() == len(kills) and await store.inbox_count() == 0


async def test_a_kill_whose_pilots_esi_would_name_is_answered_without_waiting_for_esi(
    client: Client, killmails: list[dict[str, Any]]
) -> None:
    pipeline = client.server.app[pipeline_key]
    store = client.server.app[store_key]
    # ESI (someone else's service) that does not answer until the test lets it.
    answer = asyncio.Event()
    asked: list[set[int]] = []

    async def slow_esi(ids: set[int]) -> dict[int, str]:
        asked.append(ids)
        await answer.wait()
        return {}

    pipeline.resolve_names = slow_esi
    sub = parse_submission(killmails[1])
    admission = await asyncio.wait_for(pipeline.submit([sub], source="http"), 5)
    assert admission.accepted == [sub.killmail_id]
    assert pipeline.processed == 0  # acknowledged through the inbox; the worker asks ESI
    assert await store.inbox_count() == 1
    answer.set()
    await settle(client)
    assert asked and await store.count() == 1 and await store.inbox_count() == 0
