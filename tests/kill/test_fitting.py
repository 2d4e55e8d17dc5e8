"""The fitting view and EFT text of real kills, checked against the raw ESI items."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import AUTH, Client, settle

from killboard.kill.enrich import enrich
from killboard.kill.fitting import fitting
from killboard.kill.prices import price_book
from killboard.kill.staticdata import StaticData
from killboard.kill.validate import parse_submission


@pytest.fixture(scope="module")
def by_id(killmails: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {km["killmail_id"]: km for km in killmails}


def fitted(esi: dict[str, Any], static: StaticData, prefix: str) -> list[int]:
    """Type ids of the modules (not charges) ESI lists in a rack, by slot order."""
    out = []
    for item in sorted(esi["victim"].get("items", ()), key=lambda i: i["flag"]):
        flag = static.flags.get(item["flag"])
        typed = static.types.get(item["item_type_id"])
        if flag and flag.name.startswith(prefix) and typed and typed.category_id != 8:
            out.append(item["item_type_id"])
    return out


def test_every_rack_of_every_real_kill_matches_esi(static: StaticData, killmails: list[dict[str, Any]]) -> None:
    prices = price_book(static)
    racks_seen = 0
    for esi in killmails:
        kill = enrich(parse_submission(esi), static, {}, prices)
        fit = fitting(kill, static.flags, static.types)
        for prefix in ("HiSlot", "MedSlot", "LoSlot", "RigSlot", "SubSystem", "StructureServiceSlot"):
            want = [static.types[t].name for t in fitted(esi, static, prefix)]
            assert [s.module for s in fit.racks.get(prefix, [])] == want, (esi["killmail_id"], prefix)
            racks_seen += bool(want)
    assert racks_seen > 100


def test_a_structures_services_close_its_eft(static: StaticData, by_id: dict[int, dict[str, Any]]) -> None:
    # Real Astrahus losses: one with a clone bay beside its racks, one with the clone bay alone.
    prices = price_book(static)
    for killmail_id in (103735737, 82322455):
        kill = enrich(parse_submission(by_id[killmail_id]), static, {}, prices)
        fit = fitting(kill, static.flags, static.types)
        assert [s.module for s in fit.racks["StructureServiceSlot"]] == ["Standup Cloning Center I"]
        blocks = fit.eft("x").rstrip("\n").split("\n\n")
        racks = [p for p in ("LoSlot", "MedSlot", "HiSlot", "RigSlot", "SubSystem") if fit.racks.get(p)]
        assert blocks[1 + len(racks)] == "Standup Cloning Center I"  # after the racks, before bays
        assert ("Service slots", fit.racks["StructureServiceSlot"]) in fit.rack_rows()


def test_eft_text_is_what_fitting_tools_import(static: StaticData, killmails: list[dict[str, Any]]) -> None:
    prices = price_book(static)
    # A real kill with charges loaded and drones or cargo.
    for esi in killmails:
        kill = enrich(parse_submission(esi), static, {}, prices)
        fit = fitting(kill, static.flags, static.types)
        if any(s.charge for slots in fit.racks.values() for s in slots) and fit.bays:
            break
    else:
        raise AssertionError("no real kill with charges and a bay")
    text = fit.eft("Test fit")
    blocks = text.rstrip("\n").split("\n\n")
    assert blocks[0] == f"[{fit.ship}, Test fit]"
    racks = [p for p in ("LoSlot", "MedSlot", "HiSlot", "RigSlot", "SubSystem") if fit.racks.get(p)]
    for block, prefix in zip(blocks[1:], racks, strict=False):
        lines = block.split("\n")
        assert lines == [s.module + (f", {s.charge}" if s.charge else "") for s in fit.racks[prefix]]
    tail = blocks[1 + len(racks) :]
    assert tail and all(line.rsplit(" x", 1)[1].isdigit() for block in tail for line in block.split("\n"))


async def test_kill_page_shows_the_fitting_and_links_every_entity(
    client: Client, killmails: list[dict[str, Any]]
) -> None:
    esi = max(killmails, key=lambda k: len(k["victim"].get("items", ())))
    resp = await client.post("/api/killmails", json=esi, headers=AUTH)
    assert resp.status == 202
    await settle(client)
    html = await (await client.get(f"/kill/{esi['killmail_id']}")).text()
    assert 'id="fitting-h"' in html and 'id="copy-eft"' in html and '<pre id="eft">[' in html
    victim = esi["victim"]
    assert f'href="/ship/{victim["ship_type_id"]}"' in html
    assert f'href="/system/{esi["solar_system_id"]}"' in html
    for a in esi["attackers"]:
        if a.get("corporation_id"):
            assert f'href="/corporation/{a["corporation_id"]}"' in html
