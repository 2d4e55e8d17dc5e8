"""The page's filters: URL query <-> WebSocket channel name <-> a test on a stored kill.

A filtered page is a link (`/?min=5b&sec=lowsec&solo=1`); the server renders the stored kills
that match, and the page subscribes to the channel the same filter names
(`5b&lowsec&solo`), so the browser only receives what it shows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Value floors the server has channels for, in ISK.
VALUE_FLOORS: dict[str, float] = {"5b": 5e9, "10b": 10e9}
# Security filter -> the kill's security_class values it matches.
SECURITY: dict[str, tuple[str, ...]] = {
    "highsec": ("highsec",),
    "lowsec": ("lowsec",),
    "nullsec": ("nullsec",),
    "wspace": ("wormhole",),
}
ENTITY_KINDS: tuple[str, ...] = ("system", "region", "character", "corporation", "alliance")


@dataclass(frozen=True, slots=True)
class Filter:
    min_value: str | None = None  # a VALUE_FLOORS key
    security: str | None = None  # a SECURITY key
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
        if self.solo:
            out["solo"] = "1"
        if self.npc:
            out["npc"] = "1"
        if self.entity_kind and self.entity_id is not None:
            out[self.entity_kind] = str(self.entity_id)
        return out

    def matches(self, kill: Mapping[str, Any]) -> bool:
        if self.min_value and float(kill.get("total_value") or 0) < VALUE_FLOORS[self.min_value]:
            return False
        if self.security and kill.get("security_class") not in SECURITY[self.security]:
            return False
        if self.solo and not kill.get("is_solo"):
            return False
        if self.npc and not kill.get("is_npc"):
            return False
        if self.entity_kind and self.entity_id is not None:
            return _involves(kill, self.entity_kind, self.entity_id)
        return True


def _involves(kill: Mapping[str, Any], kind: str, entity_id: int) -> bool:
    if kind in ("system", "region"):
        return kill.get(f"{kind}_id") == entity_id
    key = f"{kind}_id"
    people = [kill.get("victim") or {}, *(kill.get("attackers") or ())]
    return any(p.get(key) == entity_id for p in people)


def from_query(query: Mapping[str, str]) -> Filter:
    """Read a filter from the URL; values it does not know are ignored (a stale link still opens)."""
    min_value = query.get("min")
    security = query.get("sec")
    kind: str | None = None
    entity_id: int | None = None
    # `system=ID` (the canonical link) or the form's `kind=system&id=ID`.
    pairs = [(candidate, query.get(candidate, "")) for candidate in ENTITY_KINDS]
    pairs.append((query.get("kind", ""), query.get("id", "").strip()))
    for candidate, raw in pairs:
        if candidate in ENTITY_KINDS and raw.isdigit() and 0 < int(raw) < 2**63:
            kind, entity_id = candidate, int(raw)
            break
    return Filter(
        min_value=min_value if min_value in VALUE_FLOORS else None,
        security=security if security in SECURITY else None,
        solo=query.get("solo") in ("1", "on", "true"),
        npc=query.get("npc") in ("1", "on", "true"),
        entity_kind=kind,
        entity_id=entity_id,
    )
