"""Feed rows of an entity page, built from the participant index instead of rendering each kill.

A row shows the victim, the final blow, the place, the value and the solo/npc/awox badges: all of
it is in the kill's row, its participant row and the static data. Rendering the stored kill whole
costs ~1 ms a kill (decode, enrich, encode, parse); this costs a few microseconds, so a page of
50 rows stays within the entity page's budget. Live rows arrive whole over the socket as before.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..kill.enrich import MAX_NPC_CORPORATION_ID, display_security, is_npc_attacker, security_class
from ..kill.staticdata import StaticData
from ..storage import participants
from ..storage.participants import PilotRow
from ..storage.store import Store
from .figures import is_solo


@dataclass(frozen=True, slots=True)
class Pilots:
    """What a row needs of a kill's pilots; unpacking a fleet fight's row is ~1 ms, so these are
    kept (a kill's pilots never change)."""

    victim: PilotRow
    final: PilotRow | None
    attackers: int
    solo: bool
    npc: bool
    awox: bool


@dataclass(slots=True)
class PilotCache:
    """The last `size` kills' Pilots, by seq (least recently used goes first)."""

    size: int = 5000
    _items: OrderedDict[int, Pilots] = field(default_factory=OrderedDict)

    def get(self, seq: int, blob: bytes, static: StaticData) -> Pilots:
        found = self._items.get(seq)
        if found is not None:
            self._items.move_to_end(seq)
            return found
        found = _summary(participants.unpack(blob), static)
        self._items[seq] = found
        if len(self._items) > self.size:
            self._items.popitem(last=False)
        return found


def _summary(pilots: Sequence[PilotRow], static: StaticData) -> Pilots:
    victim, attackers = pilots[0], pilots[1:]
    final = next((p for p in attackers if p[6]), attackers[0] if attackers else None)
    players = [a for a in attackers if not is_npc_attacker({"character_id": a[0], "corporation_id": a[1]})]
    awox = victim[1] > MAX_NPC_CORPORATION_ID and any(
        a[0] and (a[1] == victim[1] or (victim[2] and a[2] == victim[2])) for a in players
    )
    return Pilots(victim, final, len(attackers), is_solo(pilots, static), not players, bool(awox))


class RowStore(Protocol):
    """Where an entity page keeps its rendered rows: the web stage's view cache (web/viewcache.py,
    passed in at setup), under its one byte bound with the feed's rows and every kept page. A row
    goes when its kill is rewritten or pruned, or a name it showed missing is saved."""

    generation: int

    def row(self, lang: str, killmail_id: int, kind: str = ...) -> str | None: ...

    def put_row(self, lang: str, killmail_id: int, html: str, generation: int, kind: str = ...) -> None: ...

    def waiting_for_names(self, killmail_id: int, entity_ids: Collection[int]) -> None: ...


@dataclass(slots=True)
class NoRows:
    """A RowStore that keeps nothing (an Entities without a server: tools, tests)."""

    generation: int = 0

    def row(self, lang: str, killmail_id: int, kind: str = "entity") -> str | None:
        return None

    def put_row(self, lang: str, killmail_id: int, html: str, generation: int, kind: str = "entity") -> None:
        return None

    def waiting_for_names(self, killmail_id: int, entity_ids: Collection[int]) -> None:
        return None


async def rows(
    store: Store, static: StaticData, seqs: Sequence[int], lang: str, cache: PilotCache | None = None
) -> list[dict[str, Any]]:
    """Feed rows (the fields templates/macros.html `kill_row` reads) of the kills with these seqs,
    in the order given; kills not in the participant index yet (or pruned) are left out."""
    if not seqs:
        return []
    cache = cache if cache is not None else PilotCache(len(seqs))
    marks = ",".join("?" * len(seqs))
    kills = await store.query(
        "SELECT k.seq, k.killmail_id, k.kill_time, k.system_id, k.total_value, p.pilots FROM kills k"
        f" JOIN participants p USING (seq) WHERE k.seq IN ({marks})",
        tuple(seqs),
    )
    found = {row[0]: (row[1:5], cache.get(row[0], row[5], static)) for row in kills}
    players = {i for _, s in found.values() for p in (s.victim, s.final) if p for i in p[:3] if i}
    names = await store.names(players) if players else {}
    out = []
    for seq in seqs:
        if seq in found:
            (killmail_id, kill_time, system_id, value), summary = found[seq]
            out.append(_row(seq, killmail_id, kill_time, system_id, value, summary, static, names, lang))
    return out


def _pick(names: Mapping[str, str], lang: str) -> str:
    return names.get(lang) or names.get("en") or ""


def _who(pilot: PilotRow, static: StaticData, names: Mapping[int, str], lang: str) -> dict[str, Any]:
    character, corporation, alliance, _faction, ship, _damage, final = pilot
    typed = static.types.get(ship)
    group = static.groups.get(typed.group_id) if typed else None
    npc = static.npc_corporations.get(corporation)
    return {
        "character_id": character or None,
        "character_name": names.get(character, ""),
        "corporation_id": corporation or None,
        "corporation_name": names.get(corporation) or (npc.name if npc else ""),
        "alliance_id": alliance or None,
        "alliance_name": names.get(alliance, ""),
        "ship_id": ship or None,
        "ship_name": _pick(static.type_names(ship), lang) if ship else "",
        "ship_group_id": typed.group_id if typed else None,
        "ship_group_name": _pick(group.names, lang) if group else "",
        "final_blow": bool(final),
    }


def _row(
    seq: int,
    killmail_id: int,
    kill_time: int,
    system_id: int,
    value: float,
    pilots: Pilots,
    static: StaticData,
    names: Mapping[int, str],
    lang: str,
) -> dict[str, Any]:
    system = static.systems.get(system_id)
    region = static.regions.get(system.region_id) if system else None
    return {
        "seq": seq,
        "killmail_id": killmail_id,
        "kill_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(kill_time)),
        "total_value": value,
        "victim": _who(pilots.victim, static, names, lang),
        "attackers": [_who(pilots.final, static, names, lang)] if pilots.final else [],
        "attacker_count": pilots.attackers,
        "system_id": system_id,
        "system_name": system.name if system else "",
        "system_security_display": display_security(system.security) if system else None,
        "security_class": security_class(system.security if system else None, system.region_id if system else None),
        "region_id": system.region_id if system else None,
        "region_name": _pick(region.names, lang) if region else "",
        "is_solo": pilots.solo,
        "is_npc": pilots.npc,
        "is_awox": pilots.awox,
    }
