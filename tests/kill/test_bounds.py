"""What a kill may hold (attackers, items, kill time) is refused at the door with 422 and a field
path when EVE could not have produced it; what is accepted up to those bounds is stored."""

from __future__ import annotations

import copy
import io
from typing import Any

import ujson
from aiohttp import ClientResponse
from conftest import AUTH, Client, settle

from killboard.kill.validate import MAX_ATTACKERS, MAX_ERRORS, MAX_ITEMS


def with_attackers(km: dict[str, Any], pool: list[dict[str, Any]], count: int) -> dict[str, Any]:
    """A real kill whose attackers are `count` real attackers (repeated), one final blow."""
    big = copy.deepcopy(km)
    big["attackers"] = [{**pool[i % len(pool)], "final_blow": i == 0} for i in range(count)]
    return big


async def post(client: Client, item: dict[str, Any]) -> ClientResponse:
    # A stream, not bytes: aiohttp warns (an error here) about large bodies sent as bytes.
    return await client.post(
        "/api/killmails",
        data=io.BytesIO(ujson.dumps(item).encode()),
        headers={**AUTH, "Content-Type": "application/json"},
    )


async def refused(client: Client, item: dict[str, Any]) -> list[str]:
    resp = await post(client, item)
    assert resp.status == 422
    assert resp.content_type == "application/json"
    (rejected,) = (await resp.json())["rejected"]
    errors: list[str] = rejected["errors"]
    return errors


async def test_kill_times_enrichment_cannot_store_are_refused(client: Client, killmails: list[dict[str, Any]]) -> None:
    for when, expected in (
        ("0999-06-01T00:00:00Z", "killmail_time: '0999-06-01T00:00:00Z' is before EVE Online opened"),
        ("2003-05-05T23:59:59Z", "is before EVE Online opened (2003-05-06)"),
        ("0001-01-01T00:00:00+14:00", "killmail_time: not an ISO 8601 time"),  # was OverflowError, a 500
        ("9999-12-31T23:00:00-14:00", "killmail_time: not an ISO 8601 time"),
    ):
        errors = await refused(client, {**killmails[0], "killmail_time": when})
        assert any(expected in e for e in errors), errors
    assert (await (await client.get("/health")).json())["inbox"] == 0  # nothing acknowledged


async def test_the_earliest_and_latest_times_are_stored(client: Client, killmails: list[dict[str, Any]]) -> None:
    for km, when, kill_time in (
        (killmails[0], "2003-05-06T00:00:00Z", "2003-05-06T00:00:00Z"),
        (killmails[1], "9999-12-31T23:59:59+00:00", "9999-12-31T23:59:59Z"),
        (killmails[2], "2010-01-01T12:00:00+14:00", "2009-12-31T22:00:00Z"),
    ):
        resp = await client.post("/api/killmails", json={**km, "killmail_time": when}, headers=AUTH)
        assert resp.status == 202
        await settle(client)
        stored = await (await client.get(f"/api/killmails/{km['killmail_id']}")).json()
        assert stored["kill_time"] == kill_time


async def test_more_attackers_than_eve_produces(client: Client, killmails: list[dict[str, Any]]) -> None:
    pool = [a for k in killmails for a in k["attackers"]]
    errors = await refused(client, with_attackers(killmails[0], pool, MAX_ATTACKERS + 1))
    assert errors == [f"attackers: {MAX_ATTACKERS + 1:,} attackers; at most {MAX_ATTACKERS:,} (more than EVE produces)"]


async def test_more_items_than_eve_produces(client: Client, killmails: list[dict[str, Any]]) -> None:
    items = [i for k in killmails for i in k["victim"].get("items", [])]
    km = copy.deepcopy(killmails[0])
    # Nested ones count: half at the top, half inside one container.
    km["victim"]["items"] = [items[i % len(items)] for i in range(MAX_ITEMS // 2)]
    km["victim"]["items"][0] = {**km["victim"]["items"][0], "items": [items[0]] * (MAX_ITEMS // 2 + 1)}
    errors = await refused(client, km)
    assert errors == [f"victim.items[0].items: more than {MAX_ITEMS:,} items in one kill (nested ones counted)"]


async def test_a_kill_at_the_attacker_bound_is_stored(client: Client, killmails: list[dict[str, Any]]) -> None:
    pool = [a for k in killmails for a in k["attackers"]]
    big = with_attackers(killmails[0], pool, MAX_ATTACKERS)
    resp = await post(client, big)
    assert resp.status == 202
    await settle(client)
    stored = await (await client.get(f"/api/killmails/{big['killmail_id']}")).json()
    assert stored["attacker_count"] == MAX_ATTACKERS == len(stored["attackers"])


async def test_errors_of_one_kill_are_capped(client: Client, killmails: list[dict[str, Any]]) -> None:
    km = copy.deepcopy(killmails[0])
    km["attackers"] = [{"final_blow": "no"}] * 1000
    errors = await refused(client, km)
    assert len(errors) == MAX_ERRORS + 1
    assert errors[-1].startswith("... and ") and errors[-1].endswith(" more problems")
