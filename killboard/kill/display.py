"""How a kill reads on the page: ISK amounts, security colours, relative times, slot groups.

static/feed.js holds the JavaScript twins of `isk` and `security_level`; tests check that both
give the same text for the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .staticdata import FlagInfo

# Kills at or above this total value get the "big kill" mark.
BIG_KILL = 10_000_000_000.0

_ISK_UNITS = ((1e12, "t", 2), (1e9, "b", 2), (1e6, "m", 1), (1e3, "k", 1))


def isk(value: float | int | None) -> str:
    """ISK the way players write it: 1.25b, 340.2m, 12.5k, 950 (trailing zeros dropped)."""
    if value is None or not math.isfinite(value):
        return "0"
    amount = abs(float(value))
    sign = "-" if value < 0 else ""
    for i, (scale, suffix, digits) in enumerate(_ISK_UNITS):
        if amount >= scale:
            scaled = _round(amount / scale, digits)
            # 999.96m rounds to 1000.0m: say 1b instead.
            if scaled >= 1000 and i > 0:
                bigger_scale, bigger_suffix, bigger_digits = _ISK_UNITS[i - 1]
                return sign + _trim(f"{_round(amount / bigger_scale, bigger_digits):.{bigger_digits}f}") + bigger_suffix
            return sign + _trim(f"{scaled:.{digits}f}") + suffix
    whole = math.floor(amount + 0.5)
    return sign + ("1k" if whole >= 1000 else str(whole))


def _round(x: float, digits: int) -> float:
    """Half-up, with the same float operations as feed.js, so both print the same text."""
    factor = 10.0**digits
    return math.floor(x * factor + 0.5) / factor


def _trim(number: str) -> str:
    return number.rstrip("0").rstrip(".") if "." in number else number


def security_level(display: float | None) -> str:
    """The CSS suffix of a security status's colour: "10" for 1.0 … "01" for 0.1, "00" for 0.0
    and below (EVE colours every null-sec and wormhole system alike), "" when unknown."""
    if display is None:
        return ""
    tenths = max(0, min(10, math.floor(display * 10 + 0.5)))
    return f"{tenths:02d}"


def security_text(display: float | None) -> str:
    return "?" if display is None else f"{display:.1f}"


def en(names: Mapping[str, str] | str | None) -> str:
    """The name from a translation object (names of types, groups, regions): English from a
    full one, the one language left in one cut down to the reader's (langs.filter_names)."""
    if isinstance(names, str):
        return names
    if not names:
        return ""
    return names.get("en") or next(iter(names.values()), "")


def parse_time(text: str) -> datetime | None:
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except (TypeError, ValueError):
        return None


def ago(text: str, now: datetime | None = None) -> str:
    """ "just now", "5 min ago", "3 h ago", "2 d ago", "4 y ago": as feed.js writes it."""
    when = parse_time(text)
    if when is None:
        return ""
    seconds = ((now or datetime.now(UTC)) - when).total_seconds()
    if seconds < 60:
        return "just now"
    for limit, size, unit in ((3600, 60, "min"), (86400, 3600, "h"), (86400 * 365, 86400, "d")):
        if seconds < limit:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds // (86400 * 365))} y ago"


def utc_text(text: str) -> str:
    when = parse_time(text)
    return when.strftime("%Y-%m-%d %H:%M:%S UTC") if when else text


def attackers_in_order(attackers: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Final blow first, then by damage done, most first."""
    return sorted(attackers, key=lambda a: (not a.get("final_blow"), -(a.get("damage_done") or 0)))


def nameless(kill: Mapping[str, Any]) -> set[int]:
    """The pilots, corporations and alliances a kill (or a page row of one) shows without a name
    (ESI had not answered): a kept row of it waits for those names."""
    missing = set()
    for person in (kill.get("victim") or {}, *(kill.get("attackers") or ())):
        for kind in ("character", "corporation", "alliance"):
            if (entity_id := person.get(f"{kind}_id")) and not person.get(f"{kind}_name"):
                missing.add(entity_id)
    return missing


def final_blow(kill: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for attacker in kill.get("attackers") or ():
        if attacker.get("final_blow"):
            return attacker
    return None


# Slot groups in the order EVE's fitting window lists them; flag names come from the static data
# (inventory_flags), so new numbered slots of a known kind land in the right group.
_SLOT_GROUPS: tuple[tuple[str, str], ...] = (
    ("HiSlot", "High slots"),
    ("MedSlot", "Mid slots"),
    ("LoSlot", "Low slots"),
    ("RigSlot", "Rigs"),
    ("SubSystem", "Subsystems"),
    ("StructureServiceSlot", "Service slots"),
    ("DroneBay", "Drone bay"),
    ("FighterBay", "Fighter bay"),
    ("FighterTube", "Fighter tubes"),
    ("Implant", "Implants"),
    ("Booster", "Boosters"),
    ("Cargo", "Cargo"),
    ("FleetHangar", "Fleet hangar"),
    ("ShipHangar", "Ship hangar"),
)


@dataclass(slots=True)
class ItemRow:
    name: str
    type_id: int
    qty_dropped: int
    qty_destroyed: int
    value: float  # unit price
    depth: int = 0

    @property
    def total(self) -> float:
        return self.value * (self.qty_dropped + self.qty_destroyed)


@dataclass(slots=True)
class SlotGroup:
    label: str
    rows: list[ItemRow] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(r.total for r in self.rows)


def slot_label(flag: int, flags: Mapping[int, FlagInfo]) -> tuple[int, str]:
    """(sort position, heading) of an inventory flag."""
    if flag == 0:
        # Flag 0 is "None": killmails from before slots were recorded put everything there.
        return len(_SLOT_GROUPS) + 1, "Slot not recorded"
    info = flags.get(flag)
    name = info.name if info else ""
    for position, (prefix, label) in enumerate(_SLOT_GROUPS):
        if name.startswith(prefix) and not name.startswith(prefix + "Bay"):
            return position, label
    if info is None:
        return len(_SLOT_GROUPS) + 1, f"Flag {flag}"
    return len(_SLOT_GROUPS), info.text if info.text and info.text != "None" else info.name


def slot_groups(items: Iterable[Mapping[str, Any]], flags: Mapping[int, FlagInfo]) -> list[SlotGroup]:
    """Items grouped by where they were (high, mid, low, rigs … cargo), container contents
    listed under their container."""
    groups: dict[str, tuple[int, SlotGroup]] = {}
    for item in items:
        position, label = slot_label(int(item.get("flag") or 0), flags)
        group = groups.setdefault(label, (position, SlotGroup(label)))[1]
        _add_rows(group.rows, item, 0)
    return [g for _, g in sorted(groups.values(), key=lambda pair: (pair[0], pair[1].label))]


def _add_rows(rows: list[ItemRow], item: Mapping[str, Any], depth: int) -> None:
    rows.append(
        ItemRow(
            name=en(item.get("name")) or f"Type {item.get('type_id')}",
            type_id=int(item.get("type_id") or 0),
            qty_dropped=int(item.get("qty_dropped") or 0),
            qty_destroyed=int(item.get("qty_destroyed") or 0),
            value=float(item.get("value") or 0.0),
            depth=depth,
        )
    )
    for inner in item.get("items") or ():
        _add_rows(rows, inner, depth + 1)
