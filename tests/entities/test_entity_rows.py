"""Entity page rows, built from the participant index, show what the whole kill shows."""

from __future__ import annotations

from typing import Any

from conftest import AUTH, Client, settle

from killboard.entities import rows
from killboard.kill.display import en
from killboard.kill.staticdata import StaticData
from killboard.web.keys import store_key

WHO = ("character_id", "corporation_id", "alliance_id", "ship_id", "ship_group_id")


async def test_rows_match_the_rendered_kills(
    client: Client, static: StaticData, killmails: list[dict[str, Any]]
) -> None:
    resp = await client.post("/api/killmails", json=killmails, headers=AUTH)
    assert resp.status == 202
    await settle(client)
    store = client.server.app[store_key]
    full = {k["seq"]: k for k in (await (await client.get("/api/killmails?limit=500")).json())["killmails"]}
    light = await rows.rows(store, static, sorted(full), "en")
    assert len(light) == len(full) == len(killmails)
    for row in light:
        kill = full[row["seq"]]
        for field in (
            "killmail_id",
            "system_id",
            "system_name",
            "region_id",
            "security_class",
            "attacker_count",
            "is_solo",
            "is_npc",
            "is_awox",
            "system_security_display",
        ):
            assert row[field] == kill[field], (kill["killmail_id"], field)
        assert row["kill_time"] == kill["kill_time"]
        assert row["total_value"] == kill["total_value"]
        assert row["region_name"] == en(kill["region_name"])
        for field in WHO:
            assert row["victim"][field] == kill["victim"].get(field), (kill["killmail_id"], field)
        assert row["victim"]["ship_name"] == en(kill["victim"]["ship_name"])
        final = next(a for a in kill["attackers"] if a.get("final_blow"))
        [light_final] = row["attackers"]
        assert light_final["final_blow"]
        for field in ("character_id", "corporation_id", "alliance_id"):
            assert light_final[field] == final.get(field), (kill["killmail_id"], field)
