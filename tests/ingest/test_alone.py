"""A kill posted alone while the worker is idle is stored by its request, without the inbox: it
must be durable before the answer, stored and broadcast once, in order with queued kills, and an
answer must never wait for ESI."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from conftest import AUTH, Client, settle

from killboard.ingest.pipeline import Pipeline, Stored
from killboard.kill.validate import parse_submission
from killboard.web.keys import foreign_key, pipeline_key, store_key, stored_hooks_key


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


def count_hops(monkeypatch: Any, conn: Any) -> list[int]:
    """Calls queued to an aiosqlite connection's thread (one hop each), counted in a one-item list."""
    hops = [0]
    execute = conn._execute

    def counted(fn: Any, *args: Any, **kwargs: Any) -> Any:
        hops[0] += 1
        return execute(fn, *args, **kwargs)

    monkeypatch.setattr(conn, "_execute", counted)
    return hops


async def test_a_kill_stored_alone_takes_one_hop_to_each_database_thread(
    client: Client, killmails: list[dict[str, Any]], monkeypatch: Any
) -> None:
    # Whether it is stored and its names in one call on the reader's thread, then its write:
    # the duplicate check added no hop.
    pipeline = client.server.app[pipeline_key]
    store = client.server.app[store_key]
    await pipeline.submit([parse_submission(killmails[0])], source="http")  # names stored now
    foreign = client.server.app[foreign_key]

    async def idle() -> bool:
        return False

    monkeypatch.setattr(foreign, "check", idle)  # the foreign poll's hops are its own
    writer, reader = count_hops(monkeypatch, store._writer), count_hops(monkeypatch, store._reader)
    sub = parse_submission(killmails[1])

    admission = await pipeline.submit([sub], source="http")

    assert admission.accepted == [sub.killmail_id]
    assert (writer[0], reader[0]) == (1, 1)
    assert (await store.get(sub.killmail_id)) is not None


async def test_a_kill_posted_again_alone_is_answered_as_a_duplicate_without_enrichment(
    client: Client, killmails: list[dict[str, Any]], monkeypatch: Any
) -> None:
    pipeline = client.server.app[pipeline_key]
    sub = parse_submission(killmails[2])
    assert (await pipeline.submit([sub], source="http")).accepted == [sub.killmail_id]
    enriched: list[int] = []
    enrich = Pipeline._enrich

    def counted(self: Pipeline, sub: Any, names: Any, facts: bool) -> Any:
        enriched.append(sub.killmail_id)
        return enrich(self, sub, names, facts)

    monkeypatch.setattr(Pipeline, "_enrich", counted)
    again = await pipeline.submit([sub], source="http")
    assert again.accepted == [] and again.duplicates == [sub.killmail_id]
    assert enriched == []  # on main the kill was enriched, then found stored by the write
    assert pipeline.processed == 1
    other = parse_submission(killmails[3])
    assert (await pipeline.submit([other], source="http")).accepted == [other.killmail_id]
    assert enriched == [other.killmail_id]


async def test_a_kill_that_fails_enrichment_alone_is_acknowledged_dropped_and_counted(
    client: Client, killmails: list[dict[str, Any]], monkeypatch: Any
) -> None:
    # As the worker does with an inbox row it cannot enrich: logged, dropped, never retried.
    pipeline = client.server.app[pipeline_key]
    store = client.server.app[store_key]

    def broken(self: Pipeline, sub: Any, names: Any, facts: bool) -> Any:
        raise KeyError("a bug")

    monkeypatch.setattr(Pipeline, "_enrich", broken)
    sub = parse_submission(killmails[4])
    admission = await pipeline.submit([sub], source="http")
    assert admission.accepted == [sub.killmail_id]
    assert await store.count() == 0 and await store.inbox_count() == 0
    assert pipeline.processed == 0
