"""The accepted input forms and the field-path errors for everything else."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from conftest import DATA

from killboard.kill.validate import Invalid, parse_submission


def errors_of(item: object) -> list[str]:
    with pytest.raises(Invalid) as caught:
        parse_submission(item)
    return caught.value.errors


def test_every_real_killmail_is_valid(killmails: list[dict[str, Any]]) -> None:
    for km in killmails:
        sub = parse_submission(km)
        assert sub.killmail_id == km["killmail_id"] and sub.killmail_hash == km["killmail_hash"]
        assert sub.esi is not None and "killmail_hash" not in sub.esi and sub.zkb is None


def test_r2z2_and_redisq_forms() -> None:
    r2z2 = json.loads((DATA / "zkillboard" / "r2z2_134265477.json").read_text())
    sub = parse_submission(r2z2)
    assert (sub.killmail_id, sub.killmail_hash) == (134265477, r2z2["hash"])
    assert sub.esi == r2z2["esi"] and sub.zkb == r2z2["zkb"]
    redisq = json.loads((DATA / "zkillboard" / "redisq_119455394.json").read_text())
    sub = parse_submission(redisq)
    assert (sub.killmail_id, sub.killmail_hash) == (119455394, redisq["package"]["zkb"]["hash"])
    assert sub.esi == redisq["package"]["killmail"]


def test_id_and_hash_only_forms_have_no_body() -> None:
    redisq = json.loads((DATA / "zkillboard" / "redisq_119455394.json").read_text())
    del redisq["package"]["killmail"]  # what RedisQ sent from 2025-12 on
    assert parse_submission(redisq).esi is None
    r2z2 = json.loads((DATA / "zkillboard" / "r2z2_134265477.json").read_text())
    assert parse_submission({"killmail_id": r2z2["killmail_id"], "hash": r2z2["hash"]}).esi is None


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda k: k["victim"].pop("ship_type_id"), "victim.ship_type_id: required integer"),
        (lambda k: k["victim"].update(ship_type_id=True), "victim.ship_type_id: must be an integer"),
        (lambda k: k["victim"].update(damage_taken=2**70), "victim.damage_taken: must be an integer"),
        (lambda k: k.update(killmail_time="yesterday"), "killmail_time: not an ISO 8601 time: 'yesterday'"),
        (lambda k: k.update(killmail_time=5), "killmail_time: required ISO 8601 string"),
        (lambda k: k.update(solar_system_id=-1), "solar_system_id: must be a positive integer"),
        (lambda k: k.update(attackers={}), "attackers: required non-empty array"),
        (lambda k: k["attackers"].append("x"), "attackers[1]: must be an object"),
        (lambda k: k["attackers"][0].pop("final_blow"), "attackers[0].final_blow: required boolean"),
        (lambda k: k["attackers"][0].update(security_status="5"), "attackers[0].security_status: must be a number"),
        # Every check the attackers' quick path (_attacker_ok) stands in for still says what is wrong.
        (lambda k: k["attackers"][0].pop("damage_done"), "attackers[0].damage_done: required integer"),
        (lambda k: k["attackers"][0].update(damage_done=1.5), "attackers[0].damage_done: must be an integer"),
        (lambda k: k["attackers"][0].update(character_id=0), "attackers[0].character_id: must be a positive integer"),
        (
            lambda k: k["attackers"][0].update(corporation_id="1"),
            "attackers[0].corporation_id: must be an integer when present",
        ),
        (
            lambda k: k["attackers"][0].update(alliance_id=2**63),
            "attackers[0].alliance_id: must be an integer when present",
        ),
        (lambda k: k["attackers"][0].update(faction_id=-5), "attackers[0].faction_id: must be a positive integer"),
        (
            lambda k: k["attackers"][0].update(ship_type_id=True),
            "attackers[0].ship_type_id: must be an integer when present",
        ),
        (
            lambda k: k["attackers"][0].update(weapon_type_id=0),
            "attackers[0].weapon_type_id: must be a positive integer",
        ),
        (lambda k: k["attackers"][0].update(final_blow=1), "attackers[0].final_blow: required boolean"),
        (lambda k: k["attackers"][0].update(security_status=None), "attackers[0].security_status: must be a number"),
        (
            lambda k: k["attackers"][0].update(security_status=float("inf")),
            "attackers[0].security_status: must be a number",
        ),
        (lambda k: k["victim"].update(items=[{"flag": 5}]), "victim.items[0].item_type_id: required integer"),
        (lambda k: k["victim"].update(position={"x": 1, "y": 2}), "victim.position.z: required number"),
        (lambda k: k.update(killmail_hash="ABC"), "killmail_hash: must be 40 lowercase hex digits"),
        (lambda k: k.pop("killmail_hash"), "killmail_hash: required string (40 hex digits)"),
    ],
)
def test_field_path_errors(killmails: list[dict[str, Any]], change: Any, expected: str) -> None:
    km = copy.deepcopy(killmails[0])
    km["attackers"] = km["attackers"][:1]
    change(km)
    assert expected in errors_of(km)


def test_deeply_nested_items_are_refused(killmails: list[dict[str, Any]]) -> None:
    km = copy.deepcopy(killmails[0])
    item: dict[str, Any] = {"item_type_id": 3467, "flag": 5, "singleton": 0, "quantity_dropped": 1}
    for _ in range(6):
        item = {"item_type_id": 3467, "flag": 5, "singleton": 0, "quantity_dropped": 1, "items": [item]}
    km["victim"]["items"] = [item]
    assert any("nested deeper than" in e for e in errors_of(km))


def test_wrong_shapes() -> None:
    assert errors_of([1]) == ["killmail: must be an object, got list"]
    assert errors_of({"package": None}) == ["package: null (RedisQ sends this when no kill is waiting)"]
    assert errors_of({"package": {"killID": "1"}}) == ["package.killID: required positive integer"]
    r2z2 = json.loads((DATA / "zkillboard" / "r2z2_134265477.json").read_text())
    r2z2["esi"]["killmail_id"] = 1
    assert errors_of(r2z2) == [f"esi.killmail_id: 1 does not match {r2z2['killmail_id']}"]
