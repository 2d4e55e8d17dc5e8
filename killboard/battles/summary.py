"""A battle's summary: its sides with pilots, ships, kills, losses, ISK and efficiency.

Pure (no I/O): given the battle's row and its kills' pilots (tables.kills), and for the detail
view the victims' items. Sides come from sides.py; a reader's moves (`?side.<id>=<n>`) only
change this view. A kill counts as a kill for every side with a pilot on its attackers' list
other than the victim's own side (ISK destroyed likewise), and as a loss for the victim's side.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import sides as sides_mod
from .tables import BattleRow, KillRow


@dataclass(frozen=True, slots=True)
class Lost:
    """A victim's items, summed: the pieces dropped and destroyed and their ISK."""

    dropped: int = 0
    dropped_isk: float = 0.0
    destroyed: int = 0
    destroyed_isk: float = 0.0


def lost(items: Iterable[Mapping[str, Any]]) -> Lost:
    """What a kill's items (enriched, flattened: type_id, qty_destroyed, qty_dropped, value) come to."""
    dropped, dropped_isk, destroyed, destroyed_isk = 0, 0.0, 0, 0.0
    for item in items:
        value = float(item.get("value") or 0)
        qd, qx = int(item.get("qty_dropped") or 0), int(item.get("qty_destroyed") or 0)
        dropped += qd
        dropped_isk += qd * value
        destroyed += qx
        destroyed_isk += qx * value
    return Lost(dropped, dropped_isk, destroyed, destroyed_isk)


def _kind(pilot: Sequence[int], entity: int) -> str:
    if entity == pilot[2]:
        return "alliance"
    if entity == pilot[1]:
        return "corporation"
    return "faction"


def summarize(
    battle: BattleRow,
    kills: Sequence[KillRow],
    moves: Mapping[int, int] | None = None,
    group_of: Callable[[int], int] | None = None,
    items: Mapping[int, Lost] | None = None,
    detail: bool = False,
    now: float | None = None,
    breathe: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """`group_of`: ship type -> its group (the ship class); `items`: killmail id -> what the victim's
    items came to (`lost`). `detail` adds killmail ids, ships, classes and items per side."""
    found = sides_mod.assign((k.pilots for k in kills), breathe)
    if moves:
        found = sides_mod.moved(found, moves)
    side_of = {e: i for i, members in enumerate(found) for e in members}
    n = len(found)
    kinds: dict[int, str] = {}
    entity_pilots: list[dict[int, set[int]]] = [defaultdict(set) for _ in range(n)]
    pilots: list[set[int]] = [set() for _ in range(n)]
    corps: list[set[int]] = [set() for _ in range(n)]
    alliances: list[set[int]] = [set() for _ in range(n)]
    flown: list[set[tuple[int, int]]] = [set() for _ in range(n)]  # (character, ship)
    ships_lost: list[Counter[int]] = [Counter() for _ in range(n)]
    kills_n, losses = [0] * n, [0] * n
    isk_lost, isk_destroyed = [0.0] * n, [0.0] * n
    destroyed = [[0, 0.0] for _ in range(n)]
    dropped = [[0, 0.0] for _ in range(n)]
    timeline = []
    for number, k in enumerate(kills):
        if breathe is not None and number % sides_mod.BREATHE == 0:
            breathe()
        if not k.pilots:
            continue
        victim_side = None
        shooters: set[int] = set()
        for i, pilot in enumerate(k.pilots):
            entity = sides_mod.entity_of(pilot)
            if not entity or entity not in side_of:
                continue
            s = side_of[entity]
            kinds.setdefault(entity, _kind(pilot, entity))
            if pilot[0]:
                pilots[s].add(pilot[0])
                entity_pilots[s][entity].add(pilot[0])
                flown[s].add((pilot[0], pilot[4]))
            if pilot[1]:
                corps[s].add(pilot[1])
            if pilot[2]:
                alliances[s].add(pilot[2])
            if i == 0:
                victim_side = s
            else:
                shooters.add(s)
        if victim_side is not None:
            losses[victim_side] += 1
            isk_lost[victim_side] += k.total_value
            ships_lost[victim_side][k.pilots[0][4]] += 1
            if items is not None and (lost := items.get(k.killmail_id)) is not None:
                dropped[victim_side][0] += lost.dropped
                dropped[victim_side][1] += lost.dropped_isk
                destroyed[victim_side][0] += lost.destroyed
                destroyed[victim_side][1] += lost.destroyed_isk
        for s in shooters - {victim_side}:
            kills_n[s] += 1
            isk_destroyed[s] += k.total_value
        if detail:
            timeline.append(
                {
                    "killmail_id": k.killmail_id,
                    "seq": k.seq,
                    "time": k.kill_time,
                    "side": None if victim_side is None else victim_side + 1,
                    "ship_type_id": k.pilots[0][4],
                    "character_id": k.pilots[0][0],
                    "total_value": k.total_value,
                }
            )
    out_sides = []
    for s in range(n):
        total = isk_destroyed[s] + isk_lost[s]
        side: dict[str, Any] = {
            "side": s + 1,
            "entities": [
                {"id": e, "kind": kinds.get(e, "corporation"), "pilots": len(entity_pilots[s].get(e, ()))}
                for e in sorted(found[s], key=lambda e: (-len(entity_pilots[s].get(e, ())), e))
            ],
            "pilots": len(pilots[s]),
            "corporations": len(corps[s]),
            "alliances": len(alliances[s]),
            "kills": kills_n[s],
            "losses": losses[s],
            "isk_lost": round(isk_lost[s], 2),
            "isk_destroyed": round(isk_destroyed[s], 2),
            "efficiency": round(isk_destroyed[s] / total, 4) if total else None,
        }
        if detail:
            types = Counter(ship for _, ship in flown[s] if ship)
            for ship in ships_lost[s]:
                types.setdefault(ship, 0)  # a structure or deployable lost, with no pilot in it
            classes: Counter[int] = Counter()
            for ship, count in types.items():
                classes[group_of(ship) if group_of is not None else 0] += count
            side["ships"] = [
                {"type_id": t, "pilots": c, "lost": ships_lost[s][t]}
                for t, c in sorted(types.items(), key=lambda x: (-x[1], x[0]))
            ]
            side["classes"] = [
                {"group_id": g, "pilots": c} for g, c in sorted(classes.items(), key=lambda x: (-x[1], x[0]))
            ]
            side["items_destroyed"] = {"count": destroyed[s][0], "isk": round(destroyed[s][1], 2)}
            side["items_dropped"] = {"count": dropped[s][0], "isk": round(dropped[s][1], 2)}
        out_sides.append(side)
    now = time.time() if now is None else now
    result: dict[str, Any] = {
        "battle_id": battle.battle_id,
        "system_ids": battle.system_ids,
        "region_id": battle.region_id,
        "start_time": battle.start_time,
        "end_time": battle.end_time,
        "ongoing": battle.ongoing(now),
        "kill_count": battle.kill_count,
        "isk_destroyed": round(battle.isk_destroyed, 2),
        "seq": battle.last_seq,
        "sides": out_sides,
    }
    if detail:
        result["killmail_ids"] = [k.killmail_id for k in kills]
        result["timeline"] = timeline
    return result
