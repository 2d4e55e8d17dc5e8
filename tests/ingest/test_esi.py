"""ESI against a local fake: names (batching, 404 split, outage), prices, id+hash-only kills."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from conftest import AUTH, Client, settle, until
from fakes import FakeEsi

from killboard.ingest.esi import EsiClient, EsiError
from killboard.storage.store import Store
from killboard.web.keys import names_key, prices_key, store_key


@pytest.fixture
def with_esi(
    make_client: Callable[..., Awaitable[Client]], esi: tuple[FakeEsi, str]
) -> Callable[..., Awaitable[Client]]:
    """The app with upstream on, ESI at the fake; the R2Z2 URL goes nowhere (a closed port)."""

    async def make(**overrides: Any) -> Client:
        settings = {"upstream": True, "esi_url": esi[1], "r2z2_url": "http://127.0.0.1:9", "backoff_min": 5.0}
        return await make_client(**{**settings, **overrides})

    return make


async def post(client: Client, body: Any) -> dict[str, Any]:
    resp = await client.post("/api/killmails", data=json.dumps(body), headers=AUTH)
    assert resp.status == 202, await resp.text()
    return await resp.json()


async def get_kill(client: Client, kill_id: int) -> dict[str, Any] | None:
    resp = await client.get(f"/api/killmails/{kill_id}")
    return await resp.json() if resp.status == 200 else None


async def subscribed(client: Client) -> aiohttp.ClientWebSocketResponse:
    ws = await client.ws_connect("/ws")
    await ws.send_json({"action": "sub", "channel": "kills"})
    assert (await ws.receive_json(timeout=5))["action"] == "subscribed"
    return ws


async def test_names_split_a_batch_on_404_and_cache_what_esi_knows(esi: tuple[FakeEsi, str], tmp_path: Any) -> None:
    fake, url = esi
    known = sorted(fake.names)[:2500]
    unknown = [7, 8]  # ESI fails a whole batch for one id it does not know
    async with aiohttp.ClientSession() as session:
        client = EsiClient(session, url)
        found = await client.names([*known, *unknown])
    assert set(found) == set(known)
    assert found[known[0]] == fake.names[known[0]]
    assert client.unknown_ids == set(unknown)
    calls = fake.name_calls()
    assert max(len(c) for c in calls) == 1000  # never more than ESI's limit per call
    assert {i for c in calls for i in c} == {*known, *unknown}
    assert [7] in calls and [8] in calls  # split down to the bad ids alone


async def test_an_answer_over_the_bound_fails_the_call_and_is_counted(esi: tuple[FakeEsi, str]) -> None:
    """ESI's answers are read up to max_bytes, inflated (the fake gzips them as ESI does): past
    it the call fails (EsiError, as a network failure would) and is counted as `oversized`."""
    fake, url = esi
    some = sorted(fake.names)[:200]  # ~10 KB of names, ~1 KB gzipped
    async with aiohttp.ClientSession() as session:
        assert len(await EsiClient(session, url, max_bytes=64 * 1024).names(some)) == 200
        client = EsiClient(session, url, max_bytes=4096)
        with pytest.raises(EsiError, match="answer over 4096 bytes"):
            await client.names(some)
    assert client.errors["oversized"] == 1


async def test_error_limit_headers_pause_further_calls(esi: tuple[FakeEsi, str]) -> None:
    fake, url = esi
    fake.error_limit_remain = 3  # nearly exhausted; the fake says the window resets in 1 s
    some = sorted(fake.names)[:3]
    async with aiohttp.ClientSession() as session:
        client = EsiClient(session, url)
        await client.names(some[:1])
        assert client.errors_remain == 3
        started = time.monotonic()
        await client.names(some[1:2])
    assert time.monotonic() - started >= 0.9  # waited for the reset instead of spending the budget


async def test_names_are_in_the_broadcast_frame_and_cached(
    with_esi: Callable[..., Awaitable[Client]], esi: tuple[FakeEsi, str], killmails: list[dict[str, Any]]
) -> None:
    client = await with_esi()
    ws = await subscribed(client)
    km = killmails[10]
    await post(client, km)
    frame = await ws.receive_json(timeout=10)
    attacker = km["attackers"][0]
    assert frame["data"]["attackers"][0]["character_name"] == f"Character {attacker['character_id']}"
    calls = len(esi[0].name_calls())
    await post(client, {**km, "killmail_id": km["killmail_id"] + 1})  # same pilots: answered from SQLite
    frame = await ws.receive_json(timeout=10)
    assert frame["data"]["attackers"][0]["character_name"] == f"Character {attacker['character_id']}"
    assert len(esi[0].name_calls()) == calls
    await ws.close()


async def test_slow_esi_delays_the_broadcast_only_by_the_bounded_wait(
    with_esi: Callable[..., Awaitable[Client]], esi: tuple[FakeEsi, str], killmails: list[dict[str, Any]]
) -> None:
    fake, _ = esi
    fake.delay = 2.0
    client = await with_esi(names_wait=0.2)
    ws = await subscribed(client)
    km = killmails[20]
    started = time.monotonic()
    await post(client, km)
    frame = await ws.receive_json(timeout=10)
    assert time.monotonic() - started < fake.delay  # broadcast before ESI answered
    assert frame["data"]["victim"]["character_name"] == ""
    # ESI just timed out: the next kill (other pilots) goes out without asking it again.
    await post(client, killmails[21])
    frame = await ws.receive_json(timeout=10)
    assert frame["data"]["killmail_id"] == killmails[21]["killmail_id"]
    assert len(fake.name_calls()) == 1
    assert (await (await client.get("/health")).json())["names_pending"] == 2
    await ws.close()


async def test_esi_outage_then_names_are_filled_into_the_stored_kill(
    with_esi: Callable[..., Awaitable[Client]], esi: tuple[FakeEsi, str], killmails: list[dict[str, Any]]
) -> None:
    fake, _ = esi
    fake.fail_status = 503
    client = await with_esi()
    km = killmails[30]
    await post(client, km)
    await settle(client)
    stored = await get_kill(client, km["killmail_id"])
    assert stored is not None and stored["victim"]["character_name"] == ""
    assert (await (await client.get("/health")).json())["names_pending"] == 1

    fake.fail_status = None  # ESI is back
    assert await client.server.app[names_key].fill_pending() == 1
    stored = await get_kill(client, km["killmail_id"])
    assert stored is not None
    assert stored["victim"]["character_name"] == f"Character {km['victim']['character_id']}"
    assert stored["seq"] == 1  # patched in place, not stored again
    assert (await (await client.get("/health")).json())["names_pending"] == 0


async def test_prices_refresh_from_esi_into_sqlite_and_value_kills(
    with_esi: Callable[..., Awaitable[Client]], esi: tuple[FakeEsi, str], killmails: list[dict[str, Any]]
) -> None:
    fake, _ = esi
    # A kill whose first item is an ordinary one (not a blueprint copy, which is worth 0.01 ISK).
    km = next(k for k in killmails if k["victim"].get("items") and k["victim"]["items"][0]["singleton"] != 2)
    item_type = km["victim"]["items"][0]["item_type_id"]
    fake.prices = [
        {"type_id": item_type, "average_price": 1234.5, "adjusted_price": 1000.0},
        {"type_id": 34, "adjusted_price": 4.5},  # ESI leaves out the average for some types
    ]
    client = await with_esi()
    app = client.server.app

    async def refreshed() -> bool:
        return app[prices_key].market.get(item_type) == 1234.5

    await until(refreshed)
    assert app[prices_key].market[34] == 4.5
    saved, when = await app[store_key].load_prices()
    assert saved[item_type] == 1234.5 and when is not None
    await post(client, km)  # no zkb block: valued with our prices
    await settle(client)
    stored = await get_kill(client, km["killmail_id"])
    assert stored is not None
    assert stored["items"][0]["value"] == 1234.5


async def test_id_and_hash_only_kills_are_completed_from_esi(
    with_esi: Callable[..., Awaitable[Client]], killmails: list[dict[str, Any]]
) -> None:
    client = await with_esi()
    r2z2_form, redisq_form = killmails[40], killmails[41]
    body = await post(
        client,
        [
            {"killmail_id": r2z2_form["killmail_id"], "hash": r2z2_form["killmail_hash"]},
            {"package": {"killID": redisq_form["killmail_id"], "zkb": {"hash": redisq_form["killmail_hash"]}}},
            {"killmail_id": 123, "hash": "0" * 40},  # ESI does not know it
        ],
    )
    assert body["accepted"] == [r2z2_form["killmail_id"], redisq_form["killmail_id"], 123]

    async def completed() -> bool:
        health = await (await client.get("/health")).json()
        return health["kills"] == 2 and health["inbox"] == 0

    await until(completed)
    for km in (r2z2_form, redisq_form):
        stored = await get_kill(client, km["killmail_id"])
        assert stored is not None
        assert stored["attacker_count"] == len(km["attackers"])
        assert stored["killmail_hash"] == km["killmail_hash"]
    assert await get_kill(client, 123) is None


async def test_id_and_hash_only_kill_waits_in_the_inbox_through_an_outage_and_a_restart(
    with_esi: Callable[..., Awaitable[Client]], esi: tuple[FakeEsi, str], killmails: list[dict[str, Any]], config: Any
) -> None:
    fake, _ = esi
    fake.fail_status = 502
    km = killmails[50]
    first = await with_esi()
    await post(first, {"killmail_id": km["killmail_id"], "hash": km["killmail_hash"]})
    await until(lambda: asyncio.sleep(0, any(p.startswith("/killmails/") for p, _ in fake.calls)))
    await first.close()
    store = await Store.open(config.db_path)
    assert [r.killmail_id for r in await store.inbox()] == [km["killmail_id"]]  # acknowledged, kept
    await store.close()

    fake.fail_status = None
    second = await with_esi()

    async def stored() -> bool:
        return await get_kill(second, km["killmail_id"]) is not None

    await until(stored)


async def test_id_and_hash_only_is_refused_when_upstream_is_off(
    client: Client, killmails: list[dict[str, Any]]
) -> None:
    km = killmails[0]
    resp = await client.post(
        "/api/killmails", json={"killmail_id": km["killmail_id"], "hash": km["killmail_hash"]}, headers=AUTH
    )
    assert resp.status == 422
    assert "no ESI access" in (await resp.json())["rejected"][0]["errors"][0]
