"""GET /api/battles and /api/battles/{id}: merges redirect, views move sides, errors are precise."""

from __future__ import annotations

import time
from typing import Any

import pytest
from battlefights import fight, merging_halves, post_all, when
from conftest import Client

from killboard.web.keys import static_key, store_key


async def battles(client: Client, query: str = "") -> dict[str, Any]:
    resp = await client.get("/api/battles" + query)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_battles_that_grow_into_each_other_merge_and_the_other_id_redirects(client: Client) -> None:
    early, middle, late = merging_halves()
    await post_all(client, early)
    await post_all(client, late)
    two = (await battles(client))["battles"]
    assert len(two) == 2
    first, second = sorted(b["battle_id"] for b in two)
    await post_all(client, middle)
    [one] = (await battles(client))["battles"]
    assert one["battle_id"] == first and one["kill_count"] == len(early + middle + late)
    resp = await client.get(f"/api/battles/{second}?side.99005338=1", allow_redirects=False)
    assert resp.status == 308
    assert resp.headers["Location"] == f"/api/battles/{first}?side.99005338=1"
    page = await client.get(f"/battle/{second}", allow_redirects=False)
    assert page.status == 308 and page.headers["Location"] == f"/battle/{first}"


async def test_four_kills_make_no_battle_the_fifth_does(client: Client) -> None:
    kills = sorted(fight("30001155"), key=when)[:5]
    assert when(kills[4]) - when(kills[0]) < 300
    await post_all(client, kills[:4])
    assert (await battles(client))["battles"] == []
    await post_all(client, kills[4:])
    [battle] = (await battles(client))["battles"]
    assert battle["kill_count"] == 5


async def test_filters_paging_and_moves(client: Client) -> None:
    await post_all(client, fight("30001155"))
    await post_all(client, fight("30002472"))
    everything = await battles(client)
    assert [b["system_ids"] for b in everything["battles"]] == [[30001155], [30002472]]  # newest first
    assert (await battles(client, "?system=30002472"))["battles"][0]["system_ids"] == [30002472]
    assert (await battles(client, "?min_kills=170"))["battles"][0]["kill_count"] == 174
    assert (await battles(client, "?ongoing=1"))["battles"] == []
    page1 = await battles(client, "?limit=1")
    page2 = await battles(client, f"?limit=1&cursor={page1['next']}")
    assert [page1["battles"][0]["battle_id"], page2["battles"][0]["battle_id"]] == [
        b["battle_id"] for b in everything["battles"]
    ]
    region = everything["battles"][0]["region_id"]
    assert all(b["region_id"] == region for b in (await battles(client, f"?region={region}"))["battles"])
    battle_id = (await battles(client, "?system=30002472"))["battles"][0]["battle_id"]
    plain = await (await client.get(f"/api/battles/{battle_id}")).json()
    home = next(s["side"] for s in plain["sides"] if any(e["id"] == 99003581 for e in s["entities"]))
    other = 1 if home != 1 else 2
    moved = await (await client.get(f"/api/battles/{battle_id}?side.99003581={other}")).json()
    assert any(e["id"] == 99003581 for e in moved["sides"][other - 1]["entities"])
    again = await (await client.get(f"/api/battles/{battle_id}")).json()
    assert again["sides"] == plain["sides"]  # a view, nothing stored


async def test_bad_queries_are_precise_400s(client: Client) -> None:
    for query, word in [
        ("?system=abc", "system"),
        ("?min_kills=-1", "min_kills"),
        ("?ongoing=yes", "ongoing"),
        ("?cursor=%3Cscript%3E", "cursor"),
        ("?limit=100000", "limit"),
    ]:
        resp = await client.get("/api/battles" + query)
        assert resp.status == 400, query
        assert word in (await resp.json())["error"]
    resp = await client.get("/api/battles/12x")
    assert resp.status == 400 and "battle id" in (await resp.json())["error"]
    resp = await client.get("/api/battles/99")
    assert resp.status == 404 and "no battle 99" in (await resp.json())["error"]
    resp = await client.get("/api/battles/1?side.abc=2")
    assert resp.status == 400 and "side" in (await resp.json())["error"]


HUGE = "9" * 5000  # int() refuses a string past 4,300 digits; SQLite an integer past 64 bits


@pytest.mark.parametrize(
    ("query", "word"),
    [
        ("/api/battles/" + HUGE, "battle id"),
        ("/api/battles/" + "0" * 5000 + "1x", "battle id"),
        ("/api/battles?system=" + HUGE, "system"),
        ("/api/battles?region=%C2%B2", "region"),
        ("/api/battles?min_kills=" + HUGE, "min_kills"),
        ("/api/battles?limit=" + HUGE, "limit"),
        ("/api/battles?cursor=99999999999999999999999_1", "cursor"),
        ("/api/battles?cursor=1_99999999999999999999999", "cursor"),
        ("/api/battles/1?side.1=" + HUGE, "side number"),
        ("/api/battles/1?side." + "9" * 3000 + "=1", "side"),
    ],
)
async def test_numbers_no_parser_takes_are_400s_not_500s(client: Client, query: str, word: str) -> None:
    resp = await client.get(query)
    assert resp.status == 400, query[:60]
    assert word in (await resp.json())["error"]


async def test_a_battle_id_with_leading_zeros_is_that_battle(client: Client) -> None:
    await post_all(client, sorted(fight("30001155"), key=when)[:5])
    [battle] = (await battles(client))["battles"]
    resp = await client.get("/api/battles/" + "0" * 5000 + str(battle["battle_id"]))
    assert resp.status == 200
    assert (await resp.json())["battle_id"] == battle["battle_id"]


async def test_isk_is_the_sum_of_the_kills_values(client: Client, killmails: list[dict[str, Any]]) -> None:
    # The 82 real kills with zkb come from different fights: too spread out for a battle, so
    # five of them are placed in one system and minute (their values are their own).
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))
    five = [dict(k, solar_system_id=30000142, killmail_time=now) for k in killmails[:5]]
    await post_all(client, five)
    [battle] = (await battles(client))["battles"]
    assert battle["ongoing"] is True
    ids = [k["killmail_id"] for k in five]
    marks = ",".join("?" * len(ids))
    stored = await client.server.app[store_key].query(
        f"SELECT sum(total_value) FROM kills WHERE killmail_id IN ({marks})", ids
    )
    assert battle["isk_destroyed"] == round(stored[0][0], 2) and battle["isk_destroyed"] > 0
    assert (await battles(client, "?ongoing=1"))["battles"][0]["battle_id"] == battle["battle_id"]


async def test_retention_prunes_battles_with_their_kills(client: Client) -> None:
    await post_all(client, fight("30002472"))
    [battle] = (await battles(client))["battles"]
    store = client.server.app[store_key]
    while await store.prune(int(time.time()), 100):
        pass
    assert (await battles(client))["battles"] == []
    assert (await client.get(f"/api/battles/{battle['battle_id']}")).status == 404
    assert await store.query("SELECT count(*) FROM battle_kills") == [(0,)]


async def test_the_82_real_kills_in_one_place_structures_npcs_pods_awox(
    client: Client, killmails: list[dict[str, Any]]
) -> None:
    # Structures, NPC-only kills, pods and awoxes from 82 different fights, placed in one system
    # and ten minutes (their pilots, ships, items and values are their own).
    base = time.time() - 3600
    moved = [
        dict(k, solar_system_id=30000142, killmail_time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(base + i * 7)))
        for i, k in enumerate(killmails)
    ]
    await post_all(client, moved)
    [summary] = (await battles(client))["battles"]
    assert summary["kill_count"] == len(killmails)
    battle = await (await client.get(f"/api/battles/{summary['battle_id']}")).json()
    # Every kill is exactly one side's loss, its value that side's ISK lost.
    assert sum(s["losses"] for s in battle["sides"]) == len(killmails)
    assert round(sum(s["isk_lost"] for s in battle["sides"]), 0) == round(battle["isk_destroyed"], 0)
    assert battle["isk_destroyed"] > 0
    assert sum(s["items_destroyed"]["count"] + s["items_dropped"]["count"] for s in battle["sides"]) > 0
    assert all(s["efficiency"] is None or 0 <= s["efficiency"] <= 1 for s in battle["sides"])
    assert len(battle["killmail_ids"]) == len(set(battle["killmail_ids"])) == len(killmails)
    page = await client.get(f"/battle/{summary['battle_id']}")
    assert page.status == 200
    # NPC corporations on a side are named from the static data (ESI is never asked for them).
    static = client.server.app[static_key]
    npcs = {e["id"] for s in battle["sides"] for e in s["entities"] if e["id"] in static.npc_corporations}
    assert npcs
    assert {battle["names"].get(str(i)) for i in npcs} == {static.npc_corporations[i].name for i in npcs}
    assert static.npc_corporations[min(npcs)].name in await page.text()


async def test_kills_posted_long_after_join_from_the_database(client: Client, killmails: list[dict[str, Any]]) -> None:
    """Kills older than the detector's memory (6 h behind the newest kill) are matched against the
    battles and loose kills stored for their system and time."""
    fight_kills = sorted(fight("30002472"), key=when)
    held = fight_kills[60]
    await post_all(client, [k for k in fight_kills if k is not held])
    small = sorted(fight("30001155"), key=when)[:5]
    await post_all(client, small[:4])  # four loose kills: no battle
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))
    await post_all(client, [dict(killmails[0], killmail_time=now)])  # memory moves on by years
    await post_all(client, [held, small[4]])
    found = {b["system_ids"][0]: b["kill_count"] for b in (await battles(client))["battles"]}
    assert found == {30002472: len(fight_kills), 30001155: 5}


async def test_a_corrected_body_changes_the_battles_items_on_the_next_view(client: Client) -> None:
    """What each victim's items came to is kept by kill (a page after a new kill reads that kill
    only): a corrected body (store.rewrite) drops it, so the detail shows the new items."""
    kills = sorted(fight("30001155"), key=when)
    await post_all(client, kills)
    [battle] = (await (await client.get("/api/battles")).json())["battles"]
    path = f"/api/battles/{battle['battle_id']}"
    before = await (await client.get(path)).json()
    km = max(kills, key=lambda k: len(k["victim"].get("items") or ()))
    assert km["victim"].get("items")
    esi = {k: v for k, v in km.items() if k != "zkb"}
    victim = {k: v for k, v in km["victim"].items() if k != "items"}
    assert await client.server.app[store_key].rewrite(km["killmail_id"], {**esi, "victim": victim}, km.get("zkb"))
    after = await (await client.get(path)).json()

    def pieces(data: dict[str, Any]) -> int:
        return sum(s["items_destroyed"]["count"] + s["items_dropped"]["count"] for s in data["sides"])

    lost = sum(
        int(i.get("quantity_destroyed") or 0) + int(i.get("quantity_dropped") or 0) for i in km["victim"]["items"]
    )
    assert lost > 0 and pieces(after) == pieces(before) - lost
