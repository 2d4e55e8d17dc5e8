"""The page's filters: URL query <-> WebSocket channel name <-> a test on a stored kill.

A filtered page is a link (`/?min=5b&sec=lowsec&solo=1`); the server renders the stored kills
that match, and the page subscribes to the channel the same filter names
(`5b&lowsec&solo`), so the browser only receives what it shows. Matching a stored kill goes
through the channel itself (killboard/kill/topics.py), so the rendered rows and the live ones
follow one definition.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..kill import topics
from ..numbers import MAX_ID, bounded_int

# Value floors, security and ship classes: topics the server has channels for.
VALUE_FLOORS: tuple[str, ...] = ("5b", "10b")
SECURITY: tuple[str, ...] = ("highsec", "lowsec", "nullsec", "wspace", "abyssal", "pochven")
SHIP_CLASSES: tuple[str, ...] = tuple(topics.SHIP_GROUP_TOPICS)
# The kinds one id narrows the feed to: each is a channel (`ship:587`, the victim's or any
# attacker's ship type; `group:25` their ship group), and each has an entity page linking here.
ENTITY_KINDS: tuple[str, ...] = ("system", "region", "character", "corporation", "alliance", "ship", "group")


@dataclass(frozen=True, slots=True)
class Filter:
    min_value: str | None = None  # one of VALUE_FLOORS
    security: str | None = None  # one of SECURITY
    ship_class: str | None = None  # one of SHIP_CLASSES
    solo: bool = False
    npc: bool = False
    entity_kind: str | None = None  # an ENTITY_KINDS member
    entity_id: int | None = None

    @property
    def empty(self) -> bool:
        return self.channel() == "kills"

    def channel(self) -> str:
        """The subscription channel: "kills", or the parts joined with "&"."""
        parts: list[str] = []
        if self.min_value:
            parts.append(self.min_value)
        if self.security:
            parts.append(self.security)
        if self.ship_class:
            parts.append(self.ship_class)
        if self.solo:
            parts.append("solo")
        if self.npc:
            parts.append("npc")
        if self.entity_kind and self.entity_id is not None:
            parts.append(f"{self.entity_kind}:{self.entity_id}")
        return "&".join(parts) or "kills"

    def query(self) -> dict[str, str]:
        """The URL query that gives back this filter."""
        out: dict[str, str] = {}
        if self.min_value:
            out["min"] = self.min_value
        if self.security:
            out["sec"] = self.security
        if self.ship_class:
            out["class"] = self.ship_class
        if self.solo:
            out["solo"] = "1"
        if self.npc:
            out["npc"] = "1"
        if self.entity_kind and self.entity_id is not None:
            out[self.entity_kind] = str(self.entity_id)
        return out

    def condition(self) -> topics.Condition:
        return topics.parse(self.channel())

    def matches(self, kill: Mapping[str, Any]) -> bool:
        return self.condition().matches(topics.kill_facts(kill))


def from_query(query: Mapping[str, str]) -> Filter:
    """Read a filter from the URL; values it does not know are ignored (a stale link still opens)."""
    min_value = query.get("min")
    security = query.get("sec")
    ship_class = query.get("class")
    kind: str | None = None
    entity_id: int | None = None
    # `system=ID` (the canonical link) or the form's `kind=system&id=ID`.
    pairs = [(candidate, query.get(candidate, "")) for candidate in ENTITY_KINDS]
    pairs.append((query.get("kind", ""), query.get("id", "").strip()))
    for candidate, raw in pairs:
        if candidate in ENTITY_KINDS and (value := bounded_int(raw, 1, MAX_ID)) is not None:
            kind, entity_id = candidate, value
            break
    return Filter(
        min_value=min_value if min_value in VALUE_FLOORS else None,
        security=security if security in SECURITY else None,
        ship_class=ship_class if ship_class in SHIP_CLASSES else None,
        solo=query.get("solo") in ("1", "on", "true"),
        npc=query.get("npc") in ("1", "on", "true"),
        entity_kind=kind,
        entity_id=entity_id,
    )
