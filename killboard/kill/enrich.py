"""Turn a validated ESI killmail into the full killmail object that we store and broadcast.

Adds names (in every language the static data has), security class, ISK values and the
solo / NPC / awox flags. Unknown ids never fail a kill: names stay empty and the log says which.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from .prices import PriceBook
from .staticdata import Names, StaticData
from .validate import Submission, parse_time

log = logging.getLogger(__name__)

CATEGORY_SHIP = 6
CATEGORY_STRUCTURE = 65
# Categories whose types are a hull of their own: ships, NPCs (Entity), deployables, starbases,
# sovereignty structures, orbitals (customs offices), structures. When ESI gives an attacker no
# ship, a weapon of one of these stands in for it (an NPC or a tower shooting with itself). A
# player whose ship ESI left out has a module, a charge or a drone there, and that is no ship:
# the real fights have 480 such pilots, and battle pages listed "250mm Railgun II" among the
# ships flown.
HULL_CATEGORIES = frozenset({CATEGORY_SHIP, 11, 22, 23, 40, 46, CATEGORY_STRUCTURE})
GROUP_CAPSULE = 29
# zKillboard never calls the loss of a capsule, shuttle or rookie ship solo.
NEVER_SOLO_GROUPS = frozenset({GROUP_CAPSULE, 31, 237})
# zKillboard counts ids below these as NPCs: NPC characters (agents, CONCORD ...) are under
# 4,000,000, NPC corporations between 1,000,000 and 1,999,999.
MAX_NPC_CHARACTER_ID = 3_999_999
MAX_NPC_CORPORATION_ID = 1_999_999
WSPACE_REGIONS = range(11_000_001, 11_000_034)
ABYSSAL_REGIONS = range(12_000_000, 13_000_001)
POCHVEN_REGION = 10_000_070

# Slots whose contents count as "fitted" (zKillboard's fittedValue): low 11-18, mid 19-26,
# high 27-34, rigs 92-99, subsystems 125-132, structure service slots 164-171.
FITTED_FLAGS = frozenset([*range(11, 35), *range(92, 100), *range(125, 133), *range(164, 172)])

EMPTY_NAMES: Names = {"en": ""}


def display_security(raw: float) -> float:
    """EVE shows security to one decimal, rounding half up, but never shows 0.0 for positive space."""
    if 0.0 < raw < 0.05:
        return 0.1
    return math.floor(raw * 10 + 0.5) / 10


def security_class(raw: float | None, region_id: int | None) -> str:
    if region_id in WSPACE_REGIONS:
        return "wormhole"
    if region_id in ABYSSAL_REGIONS:
        return "abyssal"
    if region_id == POCHVEN_REGION:
        return "pochven"
    if raw is None:
        return "unknown"
    if raw >= 0.45:
        return "highsec"
    if raw > 0.0:
        return "lowsec"
    return "nullsec"


def is_npc_attacker(attacker: Mapping[str, Any]) -> bool:
    # `or 0`, not a .get default: validation lets an optional id be null, and None > int raises.
    if (attacker.get("character_id") or 0) > MAX_NPC_CHARACTER_ID:
        return False
    return (attacker.get("corporation_id") or 0) <= MAX_NPC_CORPORATION_ID


class _Enricher:
    """One kill's enrichment; collects unknown ids so the log names them once per kill."""

    def __init__(self, static: StaticData, names: Mapping[int, str], prices: PriceBook) -> None:
        self.static = static
        self.names = names
        self.prices = prices
        self.unknown: set[str] = set()

    def type_fields(self, type_id: int | None) -> tuple[Names, int | None, Names, int | None]:
        """(type name, group id, group name, category id) of a type."""
        if not type_id:
            return EMPTY_NAMES, None, EMPTY_NAMES, None
        fields = self.static.type_fields(type_id)
        if fields is None:
            self.unknown.add(f"type {type_id}")
            return EMPTY_NAMES, None, EMPTY_NAMES, None
        names, group_id, group_names, category_id = fields
        return names, group_id, EMPTY_NAMES if group_names is None else group_names, category_id

    def entity(self, src: Mapping[str, Any]) -> dict[str, Any]:
        character_id = src.get("character_id")
        corporation_id = src.get("corporation_id")
        alliance_id = src.get("alliance_id")
        faction_id = src.get("faction_id")
        corp_name = ""
        if corporation_id:
            npc = self.static.npc_corporations.get(corporation_id)
            corp_name = npc.name if npc else self.names.get(corporation_id, "")
            if npc and not faction_id and npc.faction_id:
                faction_id = npc.faction_id
        faction = self.static.factions.get(faction_id) if faction_id else None
        return {
            "character_id": character_id,
            "character_name": self.names.get(character_id, "") if character_id else "",
            "corporation_id": corporation_id,
            "corporation_name": corp_name,
            "alliance_id": alliance_id,
            "alliance_name": self.names.get(alliance_id, "") if alliance_id else "",
            "faction_id": faction_id,
            "faction_name": faction.names["en"] if faction else "",
        }

    def items(self, items: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], float, float, float]:
        """Enriched items plus (dropped value, destroyed value, fitted value) of them and their contents."""
        out: list[dict[str, Any]] = []
        dropped = destroyed = fitted = 0.0
        for item in items:
            type_id = item["item_type_id"]
            name, group_id, group_name, category_id = self.type_fields(type_id)
            singleton = item.get("singleton", 0)
            unit = self.prices.unit_price(type_id, singleton)
            qty_dropped = item.get("quantity_dropped", 0) or 0
            qty_destroyed = item.get("quantity_destroyed", 0) or 0
            dropped += unit * qty_dropped
            destroyed += unit * qty_destroyed
            if item["flag"] in FITTED_FLAGS:
                fitted += unit * (qty_dropped + qty_destroyed)
            row: dict[str, Any] = {
                "type_id": type_id,
                "name": name,
                "group_id": group_id,
                "group_name": group_name,
                "category_id": category_id,
                "flag": item["flag"],
                "qty_dropped": qty_dropped,
                "qty_destroyed": qty_destroyed,
                "singleton": singleton,
                "value": unit,
            }
            if item.get("items"):
                row["items"], d, x, _ = self.items(item["items"])
                dropped += d
                destroyed += x
            out.append(row)
        return out, dropped, destroyed, fitted


def enrich(sub: Submission, static: StaticData, names: Mapping[int, str], prices: PriceBook) -> dict[str, Any]:
    """The full killmail object (EVE-KILL's IKillmail shape) for a submission that has its ESI body."""
    esi = sub.esi
    if esi is None:
        raise ValueError(f"kill {sub.killmail_id} has no ESI body to enrich")
    e = _Enricher(static, names, prices)

    system_id = esi["solar_system_id"]
    system = static.systems.get(system_id)
    if system is None:
        e.unknown.add(f"system {system_id}")
    constellation = static.constellations.get(system.constellation_id) if system else None
    region = static.regions.get(system.region_id) if system else None
    raw_sec = system.security if system else None

    victim_src = esi["victim"]
    ship_id = victim_src["ship_type_id"]
    ship_name, ship_group_id, ship_group_name, ship_category = e.type_fields(ship_id)
    victim = {
        "ship_id": ship_id,
        "ship_name": ship_name,
        "ship_group_id": ship_group_id,
        "ship_group_name": ship_group_name,
        "damage_taken": victim_src["damage_taken"],
        **e.entity(victim_src),
    }

    attackers_src: list[dict[str, Any]] = esi["attackers"]
    attackers = []
    for a in attackers_src:
        a_ship = a.get("ship_type_id")
        weapon_id = a.get("weapon_type_id")
        weapon = e.type_fields(weapon_id) if weapon_id else None
        weapon_name = weapon[0] if weapon else EMPTY_NAMES
        if a_ship:
            a_ship_name, a_group_id, a_group_name, _ = e.type_fields(a_ship)
        elif weapon is not None and weapon[3] in HULL_CATEGORIES:
            a_ship = weapon_id  # no ship from ESI: a weapon that is a hull stands in for it
            a_ship_name, a_group_id, a_group_name, _ = weapon
        else:
            a_ship, a_ship_name, a_group_id, a_group_name = None, EMPTY_NAMES, None, EMPTY_NAMES
        attackers.append(
            {
                "ship_id": a_ship,
                "ship_name": a_ship_name,
                "ship_group_id": a_group_id,
                "ship_group_name": a_group_name,
                **e.entity(a),
                "weapon_type_id": weapon_id,
                "weapon_type_name": weapon_name,
                "damage_done": a["damage_done"],
                "final_blow": a["final_blow"],
                "security_status": a.get("security_status", 0.0),
            }
        )

    items, dropped, destroyed, fitted = e.items(victim_src.get("items", []))
    ship_value = prices.unit_price(ship_id)
    values = {
        "ship_value": ship_value,
        "fitting_value": ship_value + fitted,
        "dropped_value": dropped,
        "destroyed_value": destroyed + ship_value,
        "total_value": dropped + destroyed + ship_value,
    }
    zkb = sub.zkb or {}
    # zKillboard's own values win when the kill carries them: they price at kill time.
    for ours, theirs in (
        ("fitting_value", "fittedValue"),
        ("dropped_value", "droppedValue"),
        ("destroyed_value", "destroyedValue"),
        ("total_value", "totalValue"),
    ):
        if isinstance(zkb.get(theirs), int | float):
            values[ours] = float(zkb[theirs])

    flags = _flags(esi, static, ship_category, ship_group_id)
    for ours, theirs in (("is_npc", "npc"), ("is_solo", "solo"), ("is_awox", "awox")):
        if isinstance(zkb.get(theirs), bool):
            flags[ours] = zkb[theirs]

    when = parse_time(esi["killmail_time"])
    assert when is not None  # validated on the way in
    position = victim_src.get("position") or {}
    if e.unknown:
        log.warning("kill %d: unknown %s (stored with empty names)", sub.killmail_id, ", ".join(sorted(e.unknown)))
    return {
        "killmail_id": sub.killmail_id,
        "killmail_hash": sub.killmail_hash,
        # Not strftime("%Y"): it writes year 999 as "999", which no longer parses as ISO 8601.
        "kill_time": f"{when.year:04d}-{when:%m-%dT%H:%M:%S}Z",
        "system_id": system_id,
        "system_name": system.name if system else "",
        "system_security": raw_sec,
        "system_security_display": display_security(raw_sec) if raw_sec is not None else None,
        "security_class": security_class(raw_sec, system.region_id if system else None),
        "constellation_id": constellation.constellation_id if constellation else None,
        "constellation_name": constellation.name if constellation else "",
        "region_id": system.region_id if system else None,
        "region_name": region.names if region else EMPTY_NAMES,
        "x": position.get("x"),
        "y": position.get("y"),
        "z": position.get("z"),
        **values,
        **flags,
        "war_id": esi.get("war_id"),
        "moon_id": esi.get("moon_id"),
        "attacker_count": len(attackers),
        "victim": victim,
        "attackers": attackers,
        "items": items,
    }


def _flags(
    esi: Mapping[str, Any], static: StaticData, ship_category: int | None, ship_group: int | None
) -> dict[str, bool]:
    """npc, solo and awox as zKillboard defines them (zKillboard/zKillboard, its kill parser):

    - npc: no attacker is a player: every attacker's character id (if any) is in the NPC range
      and its corporation is an NPC corporation;
    - solo: the victim is a ship other than a capsule, shuttle or rookie ship, and exactly one
      attacker is a player;
    - awox: a player attacker belongs to the victim's own player corporation or alliance.
    """
    attackers = esi["attackers"]
    players = [a for a in attackers if not is_npc_attacker(a)]
    victim = esi["victim"]
    is_npc = not players
    is_solo = ship_category == CATEGORY_SHIP and ship_group not in NEVER_SOLO_GROUPS and len(players) == 1
    victim_corp = victim.get("corporation_id") or 0
    victim_alliance = victim.get("alliance_id")
    is_awox = victim_corp > MAX_NPC_CORPORATION_ID and any(
        a.get("character_id")
        and (a.get("corporation_id") == victim_corp or (victim_alliance and a.get("alliance_id") == victim_alliance))
        for a in players
    )
    return {"is_npc": is_npc, "is_solo": is_solo, "is_awox": bool(is_awox)}
