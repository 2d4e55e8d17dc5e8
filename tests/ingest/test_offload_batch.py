"""Batches of ordinary kills prepared in the worker process during a catch-up (ingest/offload.py
`_prepare`, Pipeline._prepare_elsewhere): the same bytes, rows and frames as the kills made in
this process, in order, and nothing lost when the worker dies with a batch."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import ujson

from killboard.ingest import pipeline as pipeline_module
from killboard.ingest.offload import STUCK, Offload, kills_of, pack
from killboard.ingest.pipeline import WORKER_BATCH, Pipeline
from killboard.ingest.queue import Pending
from killboard.kill.codec import player_ids
from killboard.kill.validate import parse_submission
from killboard.storage.store import Store
from killboard.web.keys import pipeline_key, store_key
from tests.conftest import Client, until
from tests.ingest.test_offload import _post_and_watch, _stored

MakeClient = Callable[..., Awaitable[Client]]


async def _worker_up(pipeline: Pipeline) -> Offload:
    offload = pipeline.offload
    assert offload is not None

    async def up() -> bool:
        return offload.ready()

    await until(up, 30)
    return offload


def _some_names(killmails: list[dict[str, Any]]) -> Callable[[set[int]], Awaitable[dict[int, str]]]:
    """ESI's name lookup (a fake of their service): names for every third player, so both
    enrichment's named and nameless paths and the unresolved set are exercised."""
    known = {i for km in killmails for i in sorted(player_ids(km))[::3]}

    async def resolve(ids: set[int]) -> dict[int, str]:
        return {i: f"Pilot {i}" for i in ids if i in known}

    return resolve


async def test_a_batch_made_in_the_worker_is_the_one_made_here(
    make_client: MakeClient, killmails: list[dict[str, Any]]
) -> None:
    client = await make_client()
    pipeline = client.server.app[pipeline_key]
    pipeline.resolve_names = _some_names(killmails)
    assert len(killmails) >= WORKER_BATCH
    # Imports (not live) get no match keys unless facts_for_all: both kinds in one batch.
    batch = [Pending(parse_submission(km), i % 5 != 0) for i, km in enumerate(killmails)]
    offload = await _worker_up(pipeline)

    pipeline.offload = None
    here = await pipeline.prepare(batch)
    pipeline.offload = offload
    pipeline.in_flight = 2  # as in a catch-up, with a write in flight: the loop takes no kill back
    there = await pipeline.prepare(batch)
    pipeline.in_flight = 0
    assert pipeline.offloaded == len(killmails)  # made there, not here

    assert len(there.kills) == len(here.kills) == len(killmails)
    assert (there.live, there.unresolved, there.rejected) == (here.live, here.unresolved, here.rejected)
    assert there.unresolved
    assert there.facts == here.facts and len(there.facts) < len(killmails)
    columns = ("killmail_id", "killmail_hash", "kill_time", "system_id", "total_value", "source", "packed")
    for a, b in zip(there.kills, here.kills, strict=True):
        assert [getattr(a, c) for c in columns] == [getattr(b, c) for c in columns]
        assert a.packed  # the stored bytes came made, as they do here
        assert a.body == b.body
        assert a.names == b.names
        assert a.participation is not None and b.participation is not None
        assert a.participation.pilots == b.participation.pilots
        assert a.participation.entities == b.participation.entities
        assert a.participation.packed == b.participation.packed
        assert a.prepared == b.prepared and a.prepared  # the entity figures' share


async def test_a_small_batch_and_a_lone_kill_stay_in_this_process(
    make_client: MakeClient, killmails: list[dict[str, Any]]
) -> None:
    client = await make_client()
    pipeline = client.server.app[pipeline_key]
    await _worker_up(pipeline)
    await pipeline.prepare([Pending(parse_submission(km), True) for km in killmails[: WORKER_BATCH - 1]])
    await pipeline.prepare([Pending(parse_submission(killmails[0]), True)])
    assert pipeline.offloaded == 0


async def test_a_batch_through_the_worker_stores_and_sends_what_the_in_process_path_does(
    make_client: MakeClient, killmails: list[dict[str, Any]], tmp_path: Path
) -> None:
    worker = await make_client()
    here = await make_client(db_path=tmp_path / "here.sqlite3")
    here.server.app[pipeline_key].offload = None
    pipeline = worker.server.app[pipeline_key]
    await _worker_up(pipeline)
    pipeline.take_back = False  # on a busy machine the loop could take every chunk back

    frames = await _post_and_watch(worker, killmails, as_one=True)
    assert pipeline.offloaded == len(killmails)  # all made there
    assert frames == await _post_and_watch(here, killmails, as_one=True)
    assert [ujson.loads(f)["data"]["killmail_id"] for f in frames] == [k["killmail_id"] for k in killmails]
    assert await _stored(worker) == await _stored(here)
    for km in killmails[:5]:
        for query in ("", "?lang=de"):
            url = f"/api/killmails/{km['killmail_id']}{query}"
            assert await (await worker.get(url)).read() == await (await here.get(url)).read()


async def test_a_worker_that_dies_after_every_chunk_was_taken_back_is_found_dead(
    make_client: MakeClient, killmails: list[dict[str, Any]]
) -> None:
    """A stopped worker claims nothing, so the loop takes every chunk of a batch back and makes
    it; when the worker then dies, nobody awaits its calls, and the death is still found at once
    (not at the next batch's hand-over)."""
    client = await make_client()
    pipeline = client.server.app[pipeline_key]
    offload = await _worker_up(pipeline)
    pid = offload.pid()
    assert pid is not None
    batch = [Pending(parse_submission(km), True) for km in killmails]
    os.kill(pid, signal.SIGSTOP)
    try:
        prepared = await asyncio.wait_for(pipeline.prepare(batch), 30)
    finally:
        os.kill(pid, signal.SIGKILL)
    assert len(prepared.kills) == len(killmails) and pipeline.offloaded == 0 and offload.lost == 0

    async def found_dead() -> bool:
        return offload.lost == 1 and offload.pid() is None

    await until(found_dead)


@pytest.mark.parametrize(
    ("batch_size", "chunk"),
    [
        (200, pipeline_module.WORKER_CHUNK),  # one batch
        (WORKER_BATCH + 8, pipeline_module.WORKER_CHUNK),  # two the worker gets, one taken ahead
        # 16 chunks handed over, taken back while the worker dies: with Future.cancel the pool's
        # manager thread failed (InvalidStateError) and the batch hung, every other run.
        (WORKER_BATCH + 8, 5),
        (WORKER_BATCH + 8, 5),
    ],
)
async def test_a_worker_killed_with_a_batch_loses_no_kill(
    make_client: MakeClient, killmails: list[dict[str, Any]], monkeypatch: Any, batch_size: int, chunk: int
) -> None:
    client = await make_client()
    pipeline = client.server.app[pipeline_key]
    pipeline.batch_size = batch_size
    monkeypatch.setattr(pipeline_module, "WORKER_CHUNK", chunk)
    offload = await _worker_up(pipeline)
    pid = offload.pid()
    assert pid is not None
    prepare = Offload.prepare
    killed: list[int] = []

    def prepare_then_kill(self: Offload, *args: Any) -> Any:
        """The batch's first chunk is handed over, then the worker is killed before it answers."""
        handed = prepare(self, *args)
        if not killed:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        return handed

    monkeypatch.setattr(Offload, "prepare", prepare_then_kill)
    frames = await _post_and_watch(client, killmails, as_one=True)
    assert killed == [pid] and pipeline.offloaded == 0  # made here instead

    async def found_dead() -> bool:  # also when the loop took every chunk back (a busy machine)
        return offload.lost == 1

    await until(found_dead)
    assert pipeline.failed == 0  # in the same attempt: no batch failed and was retried
    assert [ujson.loads(f)["data"]["killmail_id"] for f in frames] == [k["killmail_id"] for k in killmails]
    store = client.server.app[store_key]
    assert await store.inbox_count() == 0
    assert await store.count() == len(killmails)
    assert [r[0] for r in await store.query("SELECT killmail_id FROM kills ORDER BY seq")] == [
        k["killmail_id"] for k in killmails
    ]


async def test_the_loop_takes_back_what_a_busy_worker_has_not_started(
    make_client: MakeClient, killmails: list[dict[str, Any]], monkeypatch: Any
) -> None:
    client = await make_client()
    pipeline = client.server.app[pipeline_key]
    # As a POST of many kills leaves them: their payloads, parsed in the worker (offload.pack).
    batch = [Pending(pack(parse_submission(km)), True) for km in killmails]
    here = await pipeline.prepare(batch)
    offload = await _worker_up(pipeline)
    monkeypatch.setattr(pipeline_module, "WORKER_CHUNK", 10)
    busy = offload.submit(time.sleep, 1.0)  # the worker is behind (a busy machine, a POST's parse)
    assert busy is not None
    there = await pipeline.prepare(batch)  # no write in flight: the loop may help
    # The loop took every chunk back, the two the pool had already passed to the worker's call
    # queue too (offload.Claims: Future.cancel could not take those, and the worker made them).
    assert pipeline.offloaded == 0
    assert [k.killmail_id for k in there.kills] == [k.killmail_id for k in here.kills]
    assert [(k.body, k.packed, k.prepared) for k in there.kills] == [(k.body, k.packed, k.prepared) for k in here.kills]
    assert there.facts == here.facts
    assert await offload.answer(busy) is None


async def test_a_call_taken_back_with_the_prices_leaves_them_for_the_next(
    make_client: MakeClient, killmails: list[dict[str, Any]]
) -> None:
    """The first call to a worker carries the prices, the ones behind it not. Taken back before
    it ran (the loop made that chunk itself), the next call must carry them: else every later
    kill made there failed with KeyError 'prices' and was dropped (seen in a full test run)."""
    client = await make_client()
    pipeline = client.server.app[pipeline_key]
    offload = await _worker_up(pipeline)
    busy = [offload.submit(time.sleep, 0.5) for _ in range(3)]  # the pool hands a call or two ahead
    payloads = [pipeline_module.inbox_payload(parse_submission(km)) for km in killmails[:3]]
    first = offload.prepare(payloads, {}, pipeline.prices, [True] * 3)
    assert first is not None and first.cancel()  # not started: taken back
    second = offload.prepare(payloads, {}, pipeline.prices, [True] * 3)
    assert second is not None
    answer = await offload.answer(second)
    assert answer is not None
    made = kills_of(answer)
    assert not [m for m in made if isinstance(m, str)], made  # no "KeyError: 'prices'"
    for call in busy:
        assert call is not None
        await offload.answer(call)


async def test_kills_the_worker_fails_on_are_made_here_not_dropped(
    make_client: MakeClient, killmails: list[dict[str, Any]]
) -> None:
    """A fault of the worker's (here: it never got the prices, as when the call carrying them was
    taken back) must not drop acknowledged kills: each kill it fails on is made in this process."""
    client = await make_client()
    pipeline = client.server.app[pipeline_key]
    offload = await _worker_up(pipeline)
    offload._prices = pipeline.prices.market  # the server believes the worker has them: it has not
    batch = [Pending(parse_submission(km), True) for km in killmails]
    pipeline.in_flight = 2  # a write in flight: the loop takes no chunk back, the worker makes all
    prepared = await pipeline.prepare(batch)
    pipeline.in_flight = 0
    assert prepared.rejected == []
    assert [k.killmail_id for k in prepared.kills] == [km["killmail_id"] for km in killmails]


async def test_the_next_batch_goes_to_the_worker_before_this_one_is_written(
    make_client: MakeClient, killmails: list[dict[str, Any]], monkeypatch: Any
) -> None:
    """In a catch-up the worker gets the next batch's chunks behind this one's, not once this
    batch is finished and its write begun (it sat idle for that); batches are still written one
    at a time, in order, every kill once."""
    client = await make_client()
    pipeline = client.server.app[pipeline_key]
    pipeline.batch_size = WORKER_BATCH + 8  # 82 kills: two batches the worker makes, then 2 here
    await _worker_up(pipeline)
    pipeline.take_back = False  # on a busy machine the loop could take every chunk back
    events: list[tuple[str, int]] = []
    prepare, save_kills = Offload.prepare, Store.save_kills

    def logged_prepare(self: Offload, payloads: Any, *args: Any) -> Any:
        events.append(("hand", ujson.loads(payloads[0])["id"]))
        return prepare(self, payloads, *args)

    async def logged_save(self: Store, kills: Any, *args: Any, **kwargs: Any) -> Any:
        events.append(("write", kills[0].killmail_id))
        return await save_kills(self, kills, *args, **kwargs)

    monkeypatch.setattr(Offload, "prepare", logged_prepare)
    monkeypatch.setattr(Store, "save_kills", logged_save)
    frames = await _post_and_watch(client, killmails, as_one=True)

    ids = [k["killmail_id"] for k in killmails]
    second = ids[pipeline.batch_size]
    assert events.index(("hand", second)) < events.index(("write", ids[0]))
    assert pipeline.looked_ahead >= 1 and pipeline.offloaded == len(ids) - len(ids) % pipeline.batch_size
    assert [e for e in events if e[0] == "write"] == [("write", i) for i in ids[:: pipeline.batch_size]]
    assert [ujson.loads(f)["data"]["killmail_id"] for f in frames] == ids
    store = client.server.app[store_key]
    assert [r[0] for r in await store.query("SELECT killmail_id FROM kills ORDER BY seq")] == ids
    assert await store.inbox_count() == 0 and pipeline.in_flight == 0


async def test_a_worker_stopped_with_a_batch_is_killed_and_the_batch_made_here(
    make_client: MakeClient, killmails: list[dict[str, Any]]
) -> None:
    """The chunks a stopped worker holds (claimed or not: the loop may not take them back here)
    wait `stuck_after`, then it is killed and they are made in this process, the same kills."""
    client = await make_client()
    pipeline = client.server.app[pipeline_key]
    batch = [Pending(parse_submission(km), True) for km in killmails]
    offload = await _worker_up(pipeline)
    pipeline.offload = None
    here = await pipeline.prepare(batch)
    pipeline.offload = offload
    pid = offload.pid()
    assert pid is not None
    offload.stuck_after = 1.0
    pipeline.take_back = False
    os.kill(pid, signal.SIGSTOP)
    try:
        there = await asyncio.wait_for(pipeline.prepare(batch), 30)
    finally:
        offload.stuck_after = STUCK
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    assert (offload.stuck, offload.lost, pipeline.offloaded) == (1, 1, 0)
    assert [(k.killmail_id, k.body, k.packed) for k in there.kills] == [
        (k.killmail_id, k.body, k.packed) for k in here.kills
    ]
