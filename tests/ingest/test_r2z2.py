"""The R2Z2 follower against a local fake feed: 404 waits, 429, restarts, kill -9, expired cursors."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import Client, settle, until
from fakes import FakeEsi, FakeR2Z2, player_names, r2z2_object
from serverproc import ServerProcess

from killboard.ingest.r2z2 import CURSOR_KEY, MISSING_AFTER, backoff_delay
from killboard.storage.store import Store
from killboard.web.keys import follower_key, store_key

FAST = {"r2z2_wait": 0.05, "r2z2_rate": 1000.0, "backoff_min": 0.05, "backoff_max": 0.2}
UA = "killboard-tests/1.0 (ops@example.invalid)"


@pytest.fixture
async def feed() -> AsyncIterator[tuple[FakeR2Z2, str]]:
    fake = FakeR2Z2()
    url = await fake.start()
    yield fake, url
    await fake.close()


@pytest.fixture
async def esi(killmails: list[dict[str, Any]]) -> AsyncIterator[tuple[FakeEsi, str]]:
    fake = FakeEsi(names=player_names(killmails))
    url = await fake.start()
    yield fake, url
    await fake.close()


async def stored_ids(client: Client) -> list[int]:
    resp = await client.get("/api/killmails?after=0&limit=500")
    return [k["killmail_id"] for k in (await resp.json())["killmails"]]


async def test_follows_a_run_of_sequences_with_404_waits_and_a_429(
    make_client: Callable[..., Awaitable[Client]],
    feed: tuple[FakeR2Z2, str],
    esi: tuple[FakeEsi, str],
    killmails: list[dict[str, Any]],
) -> None:
    fake, url = feed
    chosen = killmails[:5]
    for i, km in enumerate(chosen):
        fake.objects[100 + i] = r2z2_object(km, 100 + i)
    fake.current = 100  # sequence.json lags the feed, as upstream does
    fake.script[102] = [429]
    client = await make_client(upstream=True, r2z2_url=url, esi_url=esi[1], user_agent=UA, **FAST)
    ws = await client.ws_connect("/ws")
    await ws.send_json({"action": "sub", "channel": "kills"})
    assert (await ws.receive_json(timeout=5))["action"] == "subscribed"

    frames = [await ws.receive_json(timeout=10) for _ in chosen]
    assert [f["data"]["killmail_id"] for f in frames] == [km["killmail_id"] for km in chosen]
    # Names from ESI are in the broadcast frame itself, not only in the stored copy.
    victim = chosen[0]["victim"]
    assert frames[0]["data"]["victim"]["character_name"] == f"Character {victim['character_id']}"
    assert frames[0]["data"]["victim"]["corporation_name"]
    # zKillboard's value wins over our own valuation.
    assert frames[0]["data"]["total_value"] == r2z2_object(chosen[0], 100)["zkb"]["totalValue"]

    # Sequence 105 is not published yet: the follower waits and asks again, then takes it.
    await until(lambda: asyncio.sleep(0, fake.asked(105) >= 3))
    late = killmails[5]
    fake.publish(105, r2z2_object(late, 105))
    frame = await ws.receive_json(timeout=10)
    assert frame["data"]["killmail_id"] == late["killmail_id"]

    assert fake.asked(102) == 2  # the 429, then the kill
    assert fake.user_agents == {UA}
    assert esi[0].user_agents == {UA}
    health = await (await client.get("/health")).json()
    assert health["upstream"]["sequence"] == 106
    assert health["upstream"]["kills"] == 6
    assert health["upstream"]["last_error"] is None
    assert await client.server.app[store_key].get_state(CURSOR_KEY) == "105"
    await ws.close()


async def test_restart_resumes_after_the_saved_sequence(
    make_client: Callable[..., Awaitable[Client]],
    feed: tuple[FakeR2Z2, str],
    killmails: list[dict[str, Any]],
) -> None:
    fake, url = feed
    for i, km in enumerate(killmails[:4]):
        fake.publish(200 + i, r2z2_object(km, 200 + i))
    fake.current = 200
    first = await make_client(upstream=True, r2z2_url=url, esi_url=url, **FAST)
    await until(lambda: _count(first, 4))
    await first.close()
    assert fake.asked(204) >= 1

    for i, km in enumerate(killmails[4:8]):
        fake.publish(204 + i, r2z2_object(km, 204 + i))
    fake.requests.clear()
    second = await make_client(upstream=True, r2z2_url=url, esi_url=url, **FAST)
    await until(lambda: _count(second, 8))
    # It asked for nothing it already had, and did not need sequence.json to find its place.
    assert not any(fake.asked(s) for s in range(200, 204))
    assert fake.requests[0] == "/204.json"
    assert sorted(await stored_ids(second)) == sorted(km["killmail_id"] for km in killmails[:8])


async def _count(client: Client, n: int) -> bool:
    return await client.server.app[store_key].count() >= n


async def test_expired_cursor_restarts_at_the_current_sequence_and_reports_the_gap(
    make_client: Callable[..., Awaitable[Client]],
    feed: tuple[FakeR2Z2, str],
    killmails: list[dict[str, Any]],
    config: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake, url = feed
    store = await Store.open(config.db_path)
    await store.set_state({CURSOR_KEY: "10"})  # a cursor from long ago
    await store.close()
    for i, km in enumerate(killmails[:3]):
        fake.publish(500 + i, r2z2_object(km, 500 + i))
    fake.current = 500
    caplog.set_level(logging.WARNING, logger="killboard.ingest.r2z2")
    client = await make_client(upstream=True, r2z2_url=url, esi_url=url, **FAST)
    await until(lambda: _count(client, 3))
    health = await (await client.get("/health")).json()
    assert health["upstream"]["skipped_sequences"] == 500 - 11
    assert any("sequence 11 has expired" in r.message and "489 sequences skipped" in r.message for r in caplog.records)
    assert sorted(await stored_ids(client)) == sorted(km["killmail_id"] for km in killmails[:3])
    # It did not keep waiting for an expired sequence: asked once, and once more after the current
    # sequence showed the feed far past it (it may have been published between the two).
    assert fake.asked(11) == 2


async def test_a_sequence_published_just_after_its_404_is_taken_not_skipped(
    make_client: Callable[..., Awaitable[Client]],
    feed: tuple[FakeR2Z2, str],
    killmails: list[dict[str, Any]],
    config: Any,
) -> None:
    """R2Z2 answers 404 for the next sequence until the follower would skip it (the feed has gone
    on past it), and publishes it just then: it is looked at once more and taken, not skipped.
    (In CI a burst published right after a 404 put the feed 260 past it at once, and it was
    skipped though it was there.)"""
    fake, url = feed
    store = await Store.open(config.db_path)
    await store.set_state({CURSOR_KEY: "300"})  # done up to 300: 301 is next
    await store.close()
    burst = [{**km, "killmail_id": km["killmail_id"] + i * 10**10} for i, km in enumerate(killmails[:40])]
    for i, km in enumerate(burst):
        fake.publish(301 + i, r2z2_object(km, 301 + i))
    fake.script[301] = [404] * MISSING_AFTER  # published just after the last of these
    client = await make_client(upstream=True, r2z2_url=url, esi_url=url, **FAST)

    async def past_the_burst() -> bool:
        upstream = (await (await client.get("/health")).json())["upstream"]
        # None until the follower has read its cursor: /health answers that early since it reads
        # its figures in one statement on the read connection.
        sequence = upstream["sequence"]
        return bool(sequence is not None and sequence > 300 + len(burst) and await _count(client, len(burst) - 1))

    await until(past_the_burst)
    await settle(client)
    health = await (await client.get("/health")).json()
    assert health["upstream"]["skipped_sequences"] == 0
    assert sorted(await stored_ids(client)) == sorted(km["killmail_id"] for km in burst)


async def test_a_single_missing_sequence_is_skipped_without_losing_the_next(
    make_client: Callable[..., Awaitable[Client]], feed: tuple[FakeR2Z2, str], killmails: list[dict[str, Any]]
) -> None:
    fake, url = feed
    fake.publish(300, r2z2_object(killmails[0], 300))
    fake.publish(302, r2z2_object(killmails[1], 302))
    fake.publish(303, r2z2_object(killmails[2], 303))
    fake.current = 300
    client = await make_client(upstream=True, r2z2_url=url, esi_url=url, **FAST)
    await until(lambda: _count(client, 1))
    fake.current = 303  # sequence.json catches up: 301 is never coming
    await until(lambda: _count(client, 3))
    assert client.server.app[follower_key].state.skipped == 1
    assert fake.asked(301) >= MISSING_AFTER  # asked again first: sequence.json may run a little ahead


async def test_upstream_errors_back_off_and_recover(
    make_client: Callable[..., Awaitable[Client]],
    feed: tuple[FakeR2Z2, str],
    killmails: list[dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake, url = feed
    fake.publish(400, r2z2_object(killmails[0], 400))
    fake.script[400] = [503, 403, 500]
    caplog.set_level(logging.WARNING, logger="killboard.ingest.r2z2")
    client = await make_client(upstream=True, r2z2_url=url, esi_url=url, **FAST)
    await until(lambda: _count(client, 1))
    warnings = [r for r in caplog.records if r.name == "killboard.ingest.r2z2"]
    assert [r.getMessage().split(";")[0] for r in warnings] == [
        "R2Z2: GET /400.json answered 503",
        "R2Z2: GET /400.json answered 403",
        "R2Z2: GET /400.json answered 500",
    ]
    assert all(r.exc_info is None for r in warnings)  # one line each, no stack traces


@pytest.mark.slow
async def test_kill_9_loses_and_repeats_nothing(
    tmp_path: Path, feed: tuple[FakeR2Z2, str], esi: tuple[FakeEsi, str], killmails: list[dict[str, Any]]
) -> None:
    fake, url = feed
    published = killmails[:40]
    for i, km in enumerate(published):
        fake.publish(1000 + i, r2z2_object(km, 1000 + i))
    fake.current = 1000
    env = {
        "KILLBOARD_UPSTREAM": "on",
        "KILLBOARD_R2Z2_URL": url,
        "KILLBOARD_ESI_URL": esi[1],
        "KILLBOARD_USER_AGENT": UA,
    }
    server = ServerProcess(tmp_path / "kb.sqlite3", env=env)
    try:
        await server.start()
        async with aiohttp.ClientSession() as session:

            async def health() -> dict[str, Any]:
                async with session.get(server.url + "/health") as resp:
                    return await resp.json()

            async def some_stored() -> bool:
                return (await health())["kills"] >= 10

            await until(some_stored)
            server.kill()  # mid-run: the follower is fetching and the worker storing
            taken_before = {s for s in range(1000, 1040) if fake.asked(s)}
            assert len(taken_before) < len(published)

            await server.start()

            async def all_stored() -> bool:
                h = await health()
                return h["kills"] >= len(published) and h["inbox"] == 0

            await until(all_stored, 15)
            async with session.get(server.url + "/api/killmails?after=0&limit=500") as resp:
                kills = (await resp.json())["killmails"]
            frames = json.dumps(await health())
        ids = [k["killmail_id"] for k in kills]
        assert sorted(ids) == sorted(km["killmail_id"] for km in published)  # every kill, exactly once
        # Each sequence was fetched once, except at most the one in flight when the process died.
        fetched_twice = [s for s in range(1000, 1040) if fake.asked(s) > 1]
        assert len(fetched_twice) <= 1, fetched_twice
        after_restart = json.loads(frames)["upstream"]
        assert after_restart["sequence"] == 1040
        assert after_restart["duplicates"] == 0  # it never took an already stored kill again
    finally:
        server.stop()


def test_backoff_doubles_up_to_the_maximum_and_survives_a_long_outage() -> None:
    assert [backoff_delay(n, 1.0, 120.0) for n in (1, 2, 3, 7, 8)] == [1.0, 2.0, 4.0, 64.0, 120.0]
    # Two days of failures at 120 s each: 2**1440 would not fit a float.
    assert backoff_delay(1440, 1.0, 120.0) == 120.0


async def test_an_object_over_the_body_bound_is_skipped_not_retried_for_ever(
    make_client: Callable[..., Awaitable[Client]],
    feed: tuple[FakeR2Z2, str],
    killmails: list[dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The follower reads an answer up to max_body_bytes (inflated: the fake gzips as R2Z2 does);
    an object past it is skipped with one warning and the cursor moves past it, and the kills
    around it are stored."""
    fake, url = feed
    by_size = sorted(killmails, key=lambda km: len(json.dumps(r2z2_object(km, 0))))
    small, big = by_size[:2], by_size[-1]
    bound = len(json.dumps(r2z2_object(small[-1], 0))) + 100
    assert len(json.dumps(r2z2_object(big, 0))) > bound + 1000
    for i, km in enumerate([small[0], big, small[1]]):
        fake.publish(700 + i, r2z2_object(km, 700 + i))
    fake.current = 700  # where a new follower starts
    caplog.set_level(logging.WARNING, logger="killboard.ingest.r2z2")
    client = await make_client(upstream=True, r2z2_url=url, esi_url=url, max_body_bytes=bound, **FAST)
    await until(lambda: _count(client, 2))
    await until(lambda: asyncio.sleep(0, fake.asked(703) >= 1))  # past it
    assert sorted(await stored_ids(client)) == sorted(km["killmail_id"] for km in small)
    assert fake.asked(701) == 1  # not asked again
    skipped = [r.message for r in caplog.records if "sequence 701" in r.message]
    assert skipped == [f"R2Z2: sequence 701 is over {bound} bytes, skipped"]
    health = await (await client.get("/health")).json()
    assert health["upstream"]["skipped_sequences"] == 1
    assert await client.server.app[store_key].get_state(CURSOR_KEY) == "702"
