"""The worker's queue is bounded in bytes as well as in kills: real fleet-fight kills fill the
byte bound long before the count, the answer is the full queue's, nothing acknowledged is lost,
and recovery keeps to the bound too."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from battlefights import fight
from conftest import AUTH, Client, settle, until
from fakes import FakeEsi, FakeR2Z2, player_names, r2z2_object

from killboard.ingest.pipeline import Pipeline
from killboard.ingest.queue import KillQueue, inbox_rows
from killboard.kill.validate import parse_submission
from killboard.storage.store import Store
from killboard.web.keys import pipeline_key

BOUND = 600_000  # bytes: ~40 of this fight's kills (15 KB on average, up to 100 KB)


async def post(client: Client, kills: list[dict[str, Any]]) -> tuple[int, dict[str, Any], str | None]:
    resp = await client.post("/api/killmails", data=json.dumps(kills), headers=AUTH)
    return resp.status, await resp.json(), resp.headers.get("Retry-After")


@asynccontextmanager
async def watched(queue: KillQueue) -> AsyncIterator[list[int]]:
    """The most the queue held in bytes, sampled every millisecond while the block runs."""
    most = [0]

    async def watch() -> None:
        while True:
            most[0] = max(most[0], queue.nbytes)
            await asyncio.sleep(0.001)

    task = asyncio.create_task(watch())
    try:
        yield most
    finally:
        task.cancel()


async def stored(client: Client, ids: list[int]) -> list[int]:
    found = []
    for kill_id in ids:
        if (await client.get(f"/api/killmails/{kill_id}")).status == 200:
            found.append(kill_id)
    return found


async def test_big_kills_fill_the_byte_bound_before_the_count(make_client: Any) -> None:
    kills = fight("30004049")  # 458 real kills of one fight, 6.8 MB
    client = await make_client(queue_size=10_000, queue_bytes=BOUND, queue_full_wait=0.2, batch_size=20)
    pipeline: Pipeline = client.app[pipeline_key]
    queue = pipeline.queue
    assert isinstance(queue, KillQueue)
    accepted: list[int] = []
    refused: tuple[int, dict[str, Any], str | None] | None = None
    async with pipeline._turn, watched(queue) as most:  # the worker's writes are held
        for i in range(0, len(kills), 5):
            status, body, retry = await post(client, kills[i : i + 5])
            if status != 202:
                refused = status, body, retry
                break
            accepted += body["accepted"]
        assert refused is not None, "the byte bound never refused a POST"
        status, body, retry = refused
        assert status == 503 and retry == "5"
        assert body["error"].startswith("server busy: queue full (") and "bytes held); retry later" in body["error"]
        assert 20 < len(accepted) < 100  # the count (10,000) is far off
        # What the queue counts is exactly the acknowledged kills' inbox payloads, within the bound.
        rows = await pipeline.store.inbox(0, 10_000)
        assert sorted(r.killmail_id for r in rows) == sorted(accepted)
        assert queue.nbytes == sum(len(r.payload) for r in rows) <= BOUND
        # /health and /metrics say so too.
        health = await (await client.get("/health")).json()
        assert health["queue_bytes"] == queue.nbytes and health["queue"] == queue.qsize()
        metrics = await (await client.get("/metrics")).text()
        assert f"killboard_queue_bytes {float(queue.nbytes)}" in metrics
        assert f"killboard_queue_bytes_capacity {float(BOUND)}" in metrics
        await asyncio.sleep(0.3)  # held: nothing more goes in
        assert most[0] <= BOUND
    await settle(client)
    assert await stored(client, accepted) == accepted  # nothing acknowledged is lost
    assert queue.nbytes == 0 and await pipeline.store.inbox_count() == 0


async def test_a_post_bigger_than_the_whole_bound_is_413(make_client: Any) -> None:
    kills = fight("30004049")
    client = await make_client(queue_bytes=BOUND, queue_full_wait=5)
    pipeline: Pipeline = client.app[pipeline_key]
    size = sum(len(r.payload) for r in inbox_rows([parse_submission(k) for k in kills[:60]], "http", True))
    assert size > BOUND
    status, body, _ = await post(client, kills[:60])
    assert status == 413
    assert body["error"] == (
        f"too large to queue: 60 kills of {size:,} bytes; the queue holds at most {BOUND:,} bytes;"
        " send fewer kills a request"
    )
    assert await pipeline.store.inbox_count() == 0
    status, body, _ = await post(client, kills[:10])
    assert status == 202 and len(body["accepted"]) == 10


async def test_recovery_waits_for_room_in_bytes(make_client: Any, config: Any, tmp_path: Path) -> None:
    """What a stop left in the inbox is queued again within the bound, however much it is."""
    kills = fight("30004049")
    store = await Store.open(config.db_path)
    try:
        await store.add_to_inbox(inbox_rows([parse_submission(k) for k in kills], "http", True))
    finally:
        await store.close()
    client = await make_client(queue_bytes=BOUND, batch_size=20)
    pipeline: Pipeline = client.app[pipeline_key]
    queue = pipeline.queue
    assert isinstance(queue, KillQueue)
    async with pipeline._turn, watched(queue) as most:  # the worker's writes are held
        await asyncio.sleep(0.5)
        assert 0 < queue.nbytes <= BOUND and most[0] <= BOUND
        assert queue.qsize() < 100
    await until(lambda: _empty(pipeline), timeout=60)
    ids = [k["killmail_id"] for k in kills]
    assert await stored(client, ids) == ids
    assert queue.nbytes == 0


async def _empty(pipeline: Pipeline) -> bool:
    return await pipeline.store.inbox_count() == 0 and pipeline.queue.empty() and not pipeline.in_flight


async def test_a_feed_kill_bigger_than_the_bound_waits_its_turn_and_is_stored(make_client: Any) -> None:
    """The R2Z2 follower holds its cursor until its kill is in: one bigger than the whole bound
    is not refused (nothing would ever take it), it goes in once nothing else is held."""
    kills = sorted(fight("30004049"), key=lambda k: len(json.dumps(k)))[-6:]  # 60-100 KB each
    feed, esi = FakeR2Z2(), FakeEsi(names=player_names(kills))
    url, esi_url = await feed.start(), await esi.start()
    try:
        for i, km in enumerate(kills):
            feed.objects[100 + i] = r2z2_object(km, 100 + i)
        feed.current = 100
        fast = {"r2z2_wait": 0.05, "r2z2_rate": 1000.0, "backoff_min": 0.05, "backoff_max": 0.2}
        client = await make_client(upstream=True, r2z2_url=url, esi_url=esi_url, queue_bytes=20_000, **fast)
        ids = [k["killmail_id"] for k in kills]

        async def all_stored() -> bool:
            return await stored(client, ids) == ids

        await until(all_stored, timeout=30)
        pipeline: Pipeline = client.app[pipeline_key]
        await settle(client)
        assert pipeline.queue.nbytes == 0  # type: ignore[attr-defined]
    finally:
        await feed.close()
        await esi.close()
