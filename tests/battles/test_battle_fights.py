"""Detection and sides on the three real fights (tests/data/battles), through the real app."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from battlefights import fight
from conftest import AUTH, Client, settle

from killboard.kill.enrich import HULL_CATEGORIES
from killboard.kill.staticdata import StaticData


async def post_all(client: Client, kills: list[dict[str, Any]]) -> None:
    for i in range(0, len(kills), 50):
        body = io.BytesIO(json.dumps(kills[i : i + 50]).encode())  # a fleet fight's kills pass 1 MiB
        resp = await client.post("/api/killmails", data=body, headers=AUTH)
        assert resp.status in (200, 202), await resp.text()
    await settle(client)


def side_of(battle: dict[str, Any], entity: int) -> int:
    [side] = [s["side"] for s in battle["sides"] if any(e["id"] == entity for e in s["entities"])]
    return side


@pytest.mark.parametrize(
    ("system", "enemies", "friends"),
    [
        # Horde (99005338) against Goonswarm (1354830081), who lost 73 and 66 ships to each other.
        ("30001155", [(99005338, 1354830081)], []),
        # Horde against 99003581 (105 losses), who fought with 99006343 despite 3 blue-on-blue kills.
        ("30002472", [(99005338, 99003581), (99005338, 99006343)], [(99003581, 99006343), (99003581, 99005393)]),
        # Goonswarm and 1900696668 (14 shots at each other among 152 shared kills) against Horde
        # and 933731581 (12 hostile among 59 shared); 498125261 fought Goonswarm's side alone.
        (
            "30004049",
            [(1354830081, 99005338), (1900696668, 99005338), (1354830081, 933731581)],
            [(1354830081, 1900696668), (99005338, 933731581), (99005338, 1727758877), (99005338, 498125261)],
        ),
    ],
)
async def test_each_fight_is_one_battle_with_its_sides(
    client: Client, static: StaticData, system: str, enemies: list[tuple[int, int]], friends: list[tuple[int, int]]
) -> None:
    kills = fight(system)
    await post_all(client, kills)
    listing = await (await client.get("/api/battles")).json()
    [summary] = listing["battles"]
    assert summary["kill_count"] == len(kills)
    assert summary["system_ids"] == [int(system)]
    assert summary["ongoing"] is False  # 2021: long over
    resp = await client.get(f"/api/battles/{summary['battle_id']}")
    battle = await resp.json()
    assert sorted(battle["killmail_ids"]) == sorted(k["killmail_id"] for k in kills)
    for a, b in enemies:
        assert side_of(battle, a) != side_of(battle, b), (a, b)
    for a, b in friends:
        assert side_of(battle, a) == side_of(battle, b), (a, b)
    # Every loss is on some side, and no kill counts twice as a loss.
    assert sum(s["losses"] for s in battle["sides"]) == len(kills)
    # Ships fielded by type and class: every lost hull is among them, on its side.
    assert sum(ship["lost"] for s in battle["sides"] for ship in s["ships"]) == len(kills)
    assert all(
        s["classes"] and sum(c["pilots"] for c in s["classes"]) == sum(x["pilots"] for x in s["ships"])
        for s in battle["sides"]
        if s["ships"]
    )
    # A pilot ESI gave no ship (480 in these fights, most shooting a 250mm Railgun II) is in no
    # ship's row, rather than in a "ship" that is their gun; a weapon that is a hull stands in.
    fielded = {ship["type_id"] for s in battle["sides"] for ship in s["ships"]}
    flown = {k["victim"]["ship_type_id"] for k in kills} | {
        a["ship_type_id"] for k in kills for a in k["attackers"] if "ship_type_id" in a
    }
    weapons = {a["weapon_type_id"] for k in kills for a in k["attackers"] if "ship_type_id" not in a}
    guns = {t for t in weapons if static.types[t].category_id not in HULL_CATEGORIES} - flown
    assert guns and fielded <= flown | weapons - guns and not fielded & guns, fielded & guns
    assert battle["names"][str(system)]  # the system's name, for pages


async def test_reimport_changes_nothing(client: Client) -> None:
    kills = fight("30002472")
    await post_all(client, kills)
    first = await (await client.get("/api/battles")).json()
    await post_all(client, list(reversed(kills)))
    again = await (await client.get("/api/battles")).json()
    assert again == first
    assert first["battles"][0]["kill_count"] == len(kills)
