"""Enrichment of the real killmails: names, security, values and flags."""

from __future__ import annotations

import copy
import json
import logging
from typing import Any

import pytest
from battlefights import fight
from conftest import DATA

from killboard.kill.enrich import display_security, enrich, security_class
from killboard.kill.prices import price_book
from killboard.kill.staticdata import StaticData
from killboard.kill.validate import parse_submission

PROVENANCE = json.loads((DATA / "killmails" / "PROVENANCE.json").read_text())


def category(name: str) -> list[int]:
    return [e["killmail_id"] for e in PROVENANCE if e["category"] == name]


@pytest.fixture(scope="module")
def by_id(killmails: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {km["killmail_id"]: km for km in killmails}


def run(km: dict[str, Any], static: StaticData, names: dict[int, str] | None = None) -> dict[str, Any]:
    return enrich(parse_submission(km), static, names or {}, price_book(static))


@pytest.mark.parametrize(
    ("raw", "shown"),
    [(0.9459, 0.9), (0.45, 0.5), (0.449, 0.4), (0.04, 0.1), (0.0001, 0.1), (0.0, 0.0), (-0.044, 0.0), (-0.99, -1.0)],
)
def test_displayed_security(raw: float, shown: float) -> None:
    assert display_security(raw) == shown


def test_security_classes_of_real_systems(static: StaticData) -> None:
    def of(system_id: int) -> str:
        system = static.systems[system_id]
        return security_class(system.security, system.region_id)

    assert of(30000142) == "highsec"  # Jita
    assert of(30002813) == "lowsec"  # Tama
    assert of(30004759) == "nullsec"  # 1DQ1-A
    assert of(31000005) == "wormhole"  # Thera
    assert of(next(s.system_id for s in static.systems.values() if s.region_id == 10000070)) == "pochven"
    assert of(next(s.system_id for s in static.systems.values() if s.region_id == 12000001)) == "abyssal"


def test_names_come_from_the_static_data_in_every_language(killmails: list[dict[str, Any]], static: StaticData) -> None:
    for km in killmails:
        kill = run(km, static)
        ship = static.types[km["victim"]["ship_type_id"]]
        assert kill["victim"]["ship_name"]["en"] == ship.name
        assert kill["victim"]["ship_group_id"] == ship.group_id
        for item, src in zip(kill["items"], km["victim"].get("items", []), strict=True):
            assert item["type_id"] == src["item_type_id"]
            assert item["name"] == static.type_names(src["item_type_id"])
        system = static.systems[km["solar_system_id"]]
        assert kill["constellation_name"] == static.constellations[system.constellation_id].name
    rifter = static.type_names(587)
    assert rifter["en"] == "Rifter" and {"de", "ru", "zh"} <= rifter.keys()


def test_npc_corporations_and_factions_are_named(by_id: dict[int, dict[str, Any]], static: StaticData) -> None:
    for kill_id in category("npc"):
        kill = run(by_id[kill_id], static)
        for a in kill["attackers"]:
            if a["corporation_id"]:
                assert a["corporation_name"] == static.npc_corporations[a["corporation_id"]].name
            else:  # Drifters, Triglavians ...: only a faction
                assert a["faction_name"] == static.factions[a["faction_id"]].names["en"] != ""


def test_player_names_come_from_the_names_given(by_id: dict[int, dict[str, Any]], static: StaticData) -> None:
    km = by_id[category("solo")[0]]
    victim = km["victim"]
    names = {victim["character_id"]: "Victim Pilot", victim["corporation_id"]: "Victim Corp"}
    kill = run(km, static, names)
    assert kill["victim"]["character_name"] == "Victim Pilot"
    assert kill["victim"]["corporation_name"] == "Victim Corp"
    assert all(a["character_name"] == "" for a in kill["attackers"])  # unknown until ESI says


def test_flags_on_the_labelled_kills(by_id: dict[int, dict[str, Any]], static: StaticData) -> None:
    for kill_id in category("npc"):
        assert run(by_id[kill_id], static)["is_npc"] is True, kill_id
    for kill_id in category("solo"):
        kill = run(by_id[kill_id], static)
        # The corpus files a pod kill under "solo"; zKillboard never calls a capsule loss solo.
        assert kill["is_solo"] is (kill["victim"]["ship_group_id"] != 29), kill_id
        assert kill["is_npc"] is False
    for kill_id in category("blob"):
        assert run(by_id[kill_id], static)["is_solo"] is False, kill_id
    # zKillboard labelled these two solo; our own computation agrees without their zkb block.
    for kill_id in (119455394, 134265477):
        assert run(by_id[kill_id], static)["is_solo"] is True


def test_awox_is_a_player_shooting_their_own_corporation(by_id: dict[int, dict[str, Any]], static: StaticData) -> None:
    km = copy.deepcopy(by_id[category("solo")[0]])
    assert run(km, static)["is_awox"] is False
    km["attackers"][0]["corporation_id"] = km["victim"]["corporation_id"]
    assert run(km, static)["is_awox"] is True


def test_zkillboard_values_and_flags_win(static: StaticData) -> None:
    package = json.loads((DATA / "zkillboard" / "redisq_119455394.json").read_text())
    zkb = package["package"]["zkb"]
    kill = enrich(parse_submission(package), static, {}, price_book(static))
    assert kill["total_value"] == zkb["totalValue"]
    assert kill["fitting_value"] == zkb["fittedValue"]
    assert kill["dropped_value"] == zkb["droppedValue"]
    assert kill["destroyed_value"] == zkb["destroyedValue"]


def test_computed_values_follow_the_rules(killmails: list[dict[str, Any]], static: StaticData) -> None:
    book = price_book(static)
    for km in killmails:
        kill = run(km, static)
        ship = book.unit_price(km["victim"]["ship_type_id"])
        assert kill["ship_value"] == ship
        assert kill["total_value"] == pytest.approx(kill["dropped_value"] + kill["destroyed_value"])
        assert kill["destroyed_value"] >= ship and kill["fitting_value"] >= ship
        assert kill["fitting_value"] <= kill["total_value"] + 1e-6


def test_computed_value_is_near_zkillboards(by_id: dict[int, dict[str, Any]], static: StaticData) -> None:
    """The ESI-only copy of a kill zKillboard valued: our offline prices land in the same range."""
    zkb = json.loads((DATA / "zkillboard" / "r2z2_134265477.json").read_text())["zkb"]
    kill = run(by_id[134265477], static)
    assert zkb["totalValue"] / 3 < kill["total_value"] < zkb["totalValue"] * 3


def test_blueprint_copies_count_next_to_nothing(by_id: dict[int, dict[str, Any]], static: StaticData) -> None:
    copies = 0
    for kill_id in category("blueprint_copy"):
        for item in run(by_id[kill_id], static)["items"]:
            if item["singleton"] == 2:
                copies += 1
                assert item["value"] == 0.01
    assert copies > 0


def test_nested_container_contents_are_kept_and_valued(by_id: dict[int, dict[str, Any]], static: StaticData) -> None:
    for kill_id in category("nested_items"):
        kill = run(by_id[kill_id], static)
        nested = [i for i in kill["items"] if i.get("items")]
        assert nested, kill_id
        for container in nested:
            for inner in container["items"]:
                assert inner["name"] == static.type_names(inner["type_id"])


def test_unknown_ids_keep_the_kill_and_are_logged(
    by_id: dict[int, dict[str, Any]], static: StaticData, caplog: pytest.LogCaptureFixture
) -> None:
    km = copy.deepcopy(by_id[category("solo")[0]])
    km["solar_system_id"] = 39999999
    km["victim"]["ship_type_id"] = 999999999
    with caplog.at_level(logging.WARNING, logger="killboard.kill.enrich"):
        kill = run(km, static)
    assert kill["system_name"] == "" and kill["security_class"] == "unknown"
    assert kill["victim"]["ship_name"] == {"en": ""}
    assert "system 39999999" in caplog.text and "type 999999999" in caplog.text


def test_an_attacker_without_a_ship_flies_its_weapon_only_when_that_is_a_hull(static: StaticData) -> None:
    # A real fleet fight: ESI left out the ship of some pilots, whose weapon is then a gun (a
    # module: no ship known) or the ship type itself (ESI's weapon when damage was the hull's).
    [km] = [k for k in fight("30004049") if k["killmail_id"] == 97001694]
    kill = run(km, static)
    shipless = [a for a in km["attackers"] if "ship_type_id" not in a]
    by_pilot = {a["character_id"]: a for a in kill["attackers"]}
    weapons = {a["weapon_type_id"] for a in shipless}
    assert {3082, 12011} <= weapons  # 250mm Railgun II, Eagle
    for a in shipless:
        shown = by_pilot[a["character_id"]]
        hull = static.types[a["weapon_type_id"]].category_id == 6
        assert shown["ship_id"] == (a["weapon_type_id"] if hull else None), a
        assert shown["ship_name"]["en"] == (static.types[a["weapon_type_id"]].name if hull else "")
        assert shown["weapon_type_name"]["en"] == static.types[a["weapon_type_id"]].name
