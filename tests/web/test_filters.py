"""The page's filters: URL query <-> channel name <-> which kills match (killboard/web/filters.py)."""

from __future__ import annotations

from typing import Any

from killboard.kill import topics
from killboard.web.filters import SECURITY, SHIP_CLASSES, VALUE_FLOORS, Filter, from_query


def kill(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "total_value": 1e9,
        "system_security": 0.3,
        "is_solo": False,
        "is_npc": False,
        "system_id": 30002537,
        "region_id": 10000030,
        "victim": {"character_id": 90000001, "corporation_id": 98000001, "alliance_id": None, "ship_group_id": 25},
        "attackers": [{"character_id": 90000002, "corporation_id": 98000002, "alliance_id": 99000002}],
    }
    return base | fields


def test_empty_query_is_the_kills_channel() -> None:
    f = from_query({})
    assert f.empty and f.channel() == "kills" and f.query() == {}


def test_channel_and_link_round_trip() -> None:
    f = from_query({"min": "5b", "sec": "lowsec", "class": "frigates", "solo": "1", "npc": "on", "system": "30002537"})
    assert f.channel() == "5b&lowsec&frigates&solo&npc&system:30002537"
    query = {"min": "5b", "sec": "lowsec", "class": "frigates", "solo": "1", "npc": "1", "system": "30002537"}
    assert f.query() == query
    assert from_query(f.query()) == f


def test_the_forms_kind_and_id_become_an_entity() -> None:
    f = from_query({"min": "", "sec": "", "kind": "corporation", "id": " 98000001 "})
    assert f == Filter(entity_kind="corporation", entity_id=98000001)
    assert f.channel() == "corporation:98000001"


def test_unknown_values_are_ignored() -> None:
    f = from_query(
        {"min": "3b", "sec": "space", "class": "boats", "kind": "planet", "id": "1", "system": "x1", "region": "-5"}
    )
    assert f.empty


def test_matches_as_the_channel_does() -> None:
    assert Filter(min_value="5b").matches(kill(total_value=5e9))
    assert not Filter(min_value="10b").matches(kill(total_value=9.99e9))
    assert Filter(security="wspace").matches(kill(region_id=11000001, system_security=-0.99))
    assert Filter(security="highsec").matches(kill(system_security=0.45))
    assert not Filter(security="highsec").matches(kill())
    assert Filter(ship_class="frigates").matches(kill()) and not Filter(ship_class="titans").matches(kill())
    assert not Filter(solo=True).matches(kill()) and Filter(solo=True).matches(kill(is_solo=True))
    assert Filter(npc=True).matches(kill(is_npc=True)) and not Filter(npc=True).matches(kill())
    assert Filter(entity_kind="system", entity_id=30002537).matches(kill())
    assert not Filter(entity_kind="region", entity_id=1).matches(kill())
    # Characters, corporations and alliances match on either side of the kill.
    assert Filter(entity_kind="character", entity_id=90000001).matches(kill())
    assert Filter(entity_kind="alliance", entity_id=99000002).matches(kill())
    assert not Filter(entity_kind="alliance", entity_id=99000001).matches(kill())


def test_every_choice_is_a_channel_the_server_knows() -> None:
    for value in (*VALUE_FLOORS, *SECURITY, *SHIP_CLASSES):
        topics.parse(value)  # raises BadChannel for a channel the server does not have
    topics.parse(Filter("5b", "nullsec", "titans", True, True, "alliance", 99000001).channel())
