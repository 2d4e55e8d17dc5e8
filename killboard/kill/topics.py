"""Subscription channels: parse a channel string into a condition, and match kills against them.

Every simple condition is one *key* a kill either has or lacks: ("all",), ("topic", "solo"),
("system", 30000142), ("victim", 99000001) ... A kill's keys are computed once (`kill_facts`)
from the enriched kill; a condition holds when the kill has its key, and an `&` combination holds
when the kill has all of them. `Index` files each condition under one of its keys, so matching a
kill looks up only the keys that kill has instead of testing every socket.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ..numbers import MAX_ID, bounded_int

# The same regions enrich's security_class names: one definition of where w-space is.
from .enrich import ABYSSAL_REGIONS, POCHVEN_REGION, WSPACE_REGIONS

Key = tuple[Any, ...]
ALL: Key = ("all",)

# Ship-group topics, taken from EVE-KILL's killboard (its SHIP_GROUPS table for the filtered kill
# lists: the `big` and `citadel` lists there are the ones the issue quotes). Matched on the
# victim's ship group.
SHIP_GROUP_TOPICS: dict[str, frozenset[int]] = {
    "big": frozenset({547, 485, 513, 902, 941, 30, 659}),
    "citadel": frozenset({1657, 1406, 1404, 1408, 2017, 2016}),
    "t1": frozenset({419, 27, 29, 547, 26, 420, 25, 28, 941, 463, 237, 31}),
    "t2": frozenset({324, 898, 906, 540, 830, 893, 543, 541, 833, 358, 894, 831, 902, 832, 900, 834, 380}),
    "t3": frozenset({963, 1305}),
    "frigates": frozenset({324, 893, 25, 831, 237}),
    "destroyers": frozenset({420, 541}),
    "cruisers": frozenset({906, 26, 833, 358, 894, 832, 963}),
    "battlecruisers": frozenset({419, 540}),
    "battleships": frozenset({27, 898, 900}),
    "capitals": frozenset({547, 485}),
    "freighters": frozenset({513, 902}),
    "supercarriers": frozenset({659}),
    "titans": frozenset({30}),
}
# The other topics, defined on the kill itself (see kill_facts).
OTHER_TOPICS = ("10b", "5b", "solo", "npc", "highsec", "lowsec", "nullsec", "wspace", "abyssal", "pochven")
TOPICS = frozenset((*OTHER_TOPICS, *SHIP_GROUP_TOPICS))

# EVE-KILL spells ids with a dot (`victim.ID`), zKillboard with a colon (`alliance:ID`).
DOT_PREFIXES = frozenset({"victim", "attacker", "system", "constellation", "region"})
COLON_PREFIXES = frozenset({"character", "corporation", "alliance", "faction", "ship", "group"})
# `system:ID` is zKillboard's spelling of `system.ID`, and so on: the same key.
COLON_PREFIXES_SAME_AS_DOT = frozenset({"system", "constellation", "region"})
MAX_PARTS = 8  # conditions in one `&` combination
ENTITY_FIELDS = (
    ("character_id", "character"),
    ("corporation_id", "corporation"),
    ("alliance_id", "alliance"),
    ("faction_id", "faction"),
)
# Index on the rarest part of a combination: an id beats a topic, a topic beats `all`.
_RARITY = {"all": 0, "topic": 1, "region": 2, "constellation": 3}


class BadChannel(ValueError):
    """A channel string we cannot use; the message names it and says why."""


@dataclass(frozen=True, slots=True)
class Condition:
    """One channel, reduced to the keys a kill must all have. Equal for equivalent spellings
    (`kills` and `all`, `solo&wspace` and `wspace&solo`)."""

    keys: frozenset[Key]

    @property
    def index_key(self) -> Key:
        return max(self.keys, key=lambda k: (_RARITY.get(k[0], 9), repr(k)))

    def matches(self, facts: KillFacts) -> bool:
        return self.keys <= facts.keys


@dataclass(frozen=True, slots=True)
class KillFacts:
    """Everything a channel can match on for one kill, computed once per kill."""

    keys: frozenset[Key]


def parse(channel: str, max_length: int = 256) -> Condition:
    """The condition a channel string names; raises BadChannel with a message naming it."""
    shown = channel if len(channel) <= 80 else channel[:80] + "…"
    if len(channel) > max_length:
        raise BadChannel(f"channel {shown!r} is too long: at most {max_length} characters")
    parts = channel.split("&")
    if len(parts) > MAX_PARTS:
        raise BadChannel(f"channel {shown!r} combines too many conditions: at most {MAX_PARTS}")
    keys: set[Key] = set()
    for part in parts:
        keys.add(_parse_part(part.strip(), shown))
    if len(keys) > 1:
        keys.discard(ALL)  # `all&solo` is just `solo`
    return Condition(frozenset(keys))


def _parse_part(part: str, shown: str) -> Key:
    if part in ("kills", "all"):
        return ALL
    if part in TOPICS:
        return ("topic", part)
    for sep, prefixes in ((".", DOT_PREFIXES), (":", COLON_PREFIXES | COLON_PREFIXES_SAME_AS_DOT)):
        prefix, found, rest = part.partition(sep)
        if found and prefix in prefixes:
            entity_id = bounded_int(rest, 1, MAX_ID)
            if entity_id is None:
                raise BadChannel(f"channel {shown!r}: {prefix}{sep} needs a positive integer id, got {rest[:40]!r}")
            return (prefix, entity_id)
    if not part:
        raise BadChannel(f"channel {shown!r} has an empty condition")
    raise BadChannel(
        f"unknown channel {part[:80]!r}"
        + (f" in {shown!r}" if part != shown else "")
        + ": use kills, a topic (solo, 10b, wspace, frigates ...), victim.ID, attacker.ID, system.ID,"
        " constellation.ID, region.ID, character:ID, corporation:ID, alliance:ID, faction:ID, ship:TYPEID,"
        " group:GROUPID, or conditions joined by &"
    )


def kill_facts(kill: Mapping[str, Any]) -> KillFacts:
    """The keys of one enriched kill (the object we store and broadcast)."""
    keys: set[Key] = {ALL}
    for field, value in (("system", "system_id"), ("constellation", "constellation_id"), ("region", "region_id")):
        if kill.get(value):
            keys.add((field, kill[value]))
    victim = kill.get("victim") or {}
    for field, name in ENTITY_FIELDS:
        if victim.get(field):
            keys.add(("victim", victim[field]))
            keys.add((name, victim[field]))
    for side in (victim, *(kill.get("attackers") or ())):
        if side.get("ship_id"):
            keys.add(("ship", side["ship_id"]))
        if side.get("ship_group_id"):
            keys.add(("group", side["ship_group_id"]))
    for attacker in kill.get("attackers") or ():
        for field, name in ENTITY_FIELDS:
            if attacker.get(field):
                keys.add(("attacker", attacker[field]))
                keys.add((name, attacker[field]))
    keys.update(("topic", t) for t in kill_topics(kill))
    return KillFacts(frozenset(keys))


def kill_topics(kill: Mapping[str, Any]) -> Iterator[str]:
    value = kill.get("total_value") or 0
    if value >= 10e9:
        yield "10b"
    if value >= 5e9:
        yield "5b"
    if kill.get("is_solo"):
        yield "solo"
    if kill.get("is_npc"):
        yield "npc"
    region = kill.get("region_id")
    sec = kill.get("system_security")
    if region in WSPACE_REGIONS:
        yield "wspace"
    elif region in ABYSSAL_REGIONS:
        yield "abyssal"
    elif sec is not None:  # known space: security by the raw value, as EVE-KILL does
        yield "highsec" if sec >= 0.45 else "lowsec" if sec > 0.0 else "nullsec"
    if region == POCHVEN_REGION:
        yield "pochven"
    group = (kill.get("victim") or {}).get("ship_group_id")
    for topic, groups in SHIP_GROUP_TOPICS.items():
        if group in groups:
            yield topic


S = TypeVar("S")

# What one socket's membership of one condition costs: its slot in the socket's set of
# conditions and in the condition's set of members (hash sets of 16-byte slots, at most 60%
# full, grown 4x). Measured with tracemalloc, 500 to 10,000 sockets of 256 shared channels:
# 76-99 bytes; tests/kill/test_topics.py holds the real cost under these figures.
MEMBERSHIP_BYTES = 112
# A distinct condition's place in the index beyond the object itself: its Entry, its empty-born
# set of members, its one-entry dict and slot under its key (measured: ~540 bytes), and
# allocator rounding per key (~50 bytes each).
ENTRY_BYTES = 640
KEY_SLACK_BYTES = 64


def condition_bytes(condition: Condition) -> int:
    """What one distinct condition holds in the index: the object, its frozenset, each key tuple
    and its id, and its entry. Key names ("victim", "topic", a topic) are shared literals."""
    size = ENTRY_BYTES + sys.getsizeof(condition) + sys.getsizeof(condition.keys)
    for key in condition.keys:
        size += KEY_SLACK_BYTES + sys.getsizeof(key)
        size += sum(sys.getsizeof(part) for part in key if not isinstance(part, str))
    return size


@dataclass(slots=True, eq=False)
class Entry(Generic[S]):
    """One distinct condition in the index: the one instance every socket holding it shares."""

    condition: Condition
    members: set[S]
    nbytes: int  # condition_bytes(condition)


class Index(Generic[S]):
    """Conditions filed under one of their keys, each with the set of its subscribers.

    Each distinct condition is held once however many subscribers use it (`add` returns the
    shared instance: a caller keeps that one, and its own equal copy is freed), and dropped with
    its last subscriber. `nbytes` is what the index holds: each distinct condition once, and
    MEMBERSHIP_BYTES per (subscriber, condition)."""

    def __init__(self) -> None:
        self._by_key: dict[Key, dict[Condition, Entry[S]]] = {}
        self.nbytes = 0

    def find(self, condition: Condition) -> Entry[S] | None:
        conditions = self._by_key.get(condition.index_key)
        return None if conditions is None else conditions.get(condition)

    def add(self, condition: Condition, subscriber: S) -> Condition:
        """File `subscriber` under `condition`; returns the shared instance of the condition."""
        conditions = self._by_key.setdefault(condition.index_key, {})
        entry = conditions.get(condition)
        if entry is None:
            entry = conditions[condition] = Entry(condition, set(), condition_bytes(condition))
            self.nbytes += entry.nbytes
        if subscriber not in entry.members:
            entry.members.add(subscriber)
            self.nbytes += MEMBERSHIP_BYTES
        return entry.condition

    def remove(self, condition: Condition, subscriber: S) -> None:
        key = condition.index_key
        conditions = self._by_key.get(key)
        if conditions is None:
            return
        entry = conditions.get(condition)
        if entry is None or subscriber not in entry.members:
            return
        entry.members.discard(subscriber)
        self.nbytes -= MEMBERSHIP_BYTES
        if not entry.members:
            del conditions[condition]
            self.nbytes -= entry.nbytes
            if not conditions:
                del self._by_key[key]

    def __len__(self) -> int:
        """Distinct conditions held."""
        return sum(len(conditions) for conditions in self._by_key.values())

    def match(self, facts: KillFacts) -> set[S]:
        """Every subscriber with at least one condition the kill meets, each once."""
        found: set[S] = set()
        by_key = self._by_key
        if len(by_key) < len(facts.keys):
            candidates: Iterable[tuple[Key, dict[Condition, Entry[S]]]] = (
                (k, v) for k, v in by_key.items() if k in facts.keys
            )
        else:
            candidates = ((k, by_key[k]) for k in facts.keys if k in by_key)
        for _key, conditions in candidates:
            for condition, entry in conditions.items():
                if len(condition.keys) == 1 or condition.keys <= facts.keys:
                    found.update(entry.members)
        return found

    def subscribers(self) -> set[S]:
        return {s for conditions in self._by_key.values() for entry in conditions.values() for s in entry.members}
