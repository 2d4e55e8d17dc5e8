"""Check an incoming killmail, in any of the forms we accept, and reduce it to one shape.

Accepted forms: an ESI killmail with a `killmail_hash` field; zKillboard's R2Z2 object
(`{killmail_id, hash, esi, zkb, ...}`); a RedisQ package (`{"package": {killID, killmail, zkb}}`).
Errors name the field path and the problem, e.g. `victim.ship_type_id: required integer`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeGuard

HASH_RE = re.compile(r"^[0-9a-f]{40}$")
# Ids and counts in EVE fit in 64 bits; anything bigger is garbage, and SQLite could not store it.
MAX_INT = 2**63 - 1
MAX_ITEM_DEPTH = 4  # ship > container > container ... real killmails nest two levels at most
# What EVE can produce, with room to spare. The largest real fights (B-R5RB 2014, M2-XFE 2020) put
# a few thousand pilots on one structure or titan, and its killmail lists each once: 10,000
# attackers leaves headroom above them. Items, nested ones counted, are a ship's or structure's
# fitting and cargo: hundreds to a few thousand stacks. Past either, the kill is refused (422):
# a 100k-attacker body took the event loop for 2.7 s.
MAX_ATTACKERS = 10_000
MAX_ITEMS = 20_000
# Problems listed for one killmail; past it, a count (a 10,000-attacker kill of bad attackers
# would answer megabytes of errors).
MAX_ERRORS = 50
# No kill happened before EVE Online opened (6 May 2003): an earlier time is a typo or a probe,
# and years below 1000 did not survive enrichment (strftime wrote 999, which no longer parsed).
EARLIEST_KILL = datetime(2003, 5, 6, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Submission:
    """One killmail reduced to what the pipeline needs. `esi` is None when only id+hash are known."""

    killmail_id: int
    killmail_hash: str
    esi: dict[str, Any] | None
    zkb: dict[str, Any] | None


class Invalid(Exception):
    """The item cannot be accepted; `errors` lists every problem found, each with its field path."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


def _is_int(value: object) -> TypeGuard[int]:
    # bool is an int in Python; JSON true is never a valid id or quantity.
    return type(value) is int and -MAX_INT <= value <= MAX_INT


def _is_number(value: object) -> bool:
    return (type(value) is int and abs(value) <= MAX_INT) or (
        type(value) is float and value == value and abs(value) != float("inf")
    )


def _item_ok(item: object) -> bool:
    """True when an item's own fields pass every check of _Checker.items (its nested items are
    checked apart): a quick yes for the ~40 items of a typical kill, which were half of the
    validation time. Anything else takes the full check, which says what is wrong."""
    if type(item) is not dict:
        return False
    type_id, flag, singleton = item.get("item_type_id"), item.get("flag"), item.get("singleton")
    destroyed, dropped = item.get("quantity_destroyed"), item.get("quantity_dropped")
    return (
        type(type_id) is int
        and 0 < type_id <= MAX_INT
        and _is_int(flag)
        and _is_int(singleton)
        and (destroyed is None or _is_int(destroyed))
        and (dropped is None or _is_int(dropped))
    )


def _positive(value: object) -> bool:
    """An optional positive id: absent (None) or an int in 1..MAX_INT."""
    return value is None or (type(value) is int and 0 < value <= MAX_INT)


def _attacker_ok(attacker: object) -> bool:
    """True when an attacker passes every check of check_esi's attacker loop: a quick yes for
    the ~11 attackers of a typical kill (path strings and seven int_field calls each were a
    third of the validation time). Anything else takes the full check, which says what is wrong."""
    if type(attacker) is not dict:
        return False
    get = attacker.get
    security = get("security_status", 0)
    return (
        _is_int(get("damage_done"))
        and _positive(get("character_id"))
        and _positive(get("corporation_id"))
        and _positive(get("alliance_id"))
        and _positive(get("faction_id"))
        and _positive(get("ship_type_id"))
        and _positive(get("weapon_type_id"))
        and type(get("final_blow")) is bool
        and _is_number(security)
    )


class _Checker:
    def __init__(self) -> None:
        self.errors: list[str] = []
        self.more = 0  # problems past MAX_ERRORS, counted only
        self.item_count = 0

    def fail(self, path: str, problem: str) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(f"{path}: {problem}")
        else:
            self.more += 1

    def result(self) -> list[str]:
        return self.errors + ([f"... and {self.more} more problems"] if self.more else [])

    def int_field(self, obj: dict[str, Any], key: str, path: str, *, required: bool, positive: bool = False) -> None:
        if key not in obj or obj[key] is None:
            if required:
                self.fail(path + key, "required integer")
            return
        value = obj[key]
        if not _is_int(value):
            self.fail(path + key, "must be an integer" if required else "must be an integer when present")
        elif positive and value <= 0:
            self.fail(path + key, "must be a positive integer")

    def entity(self, obj: dict[str, Any], path: str) -> None:
        for key in ("character_id", "corporation_id", "alliance_id", "faction_id"):
            self.int_field(obj, key, path, required=False, positive=True)

    def items(self, items: object, path: str, depth: int) -> None:
        if not isinstance(items, list):
            self.fail(path.rstrip("."), "must be an array")
            return
        if depth > MAX_ITEM_DEPTH:
            self.fail(path.rstrip("."), f"items nested deeper than {MAX_ITEM_DEPTH} levels")
            return
        if self.item_count > MAX_ITEMS:
            return  # already said
        self.item_count += len(items)
        if self.item_count > MAX_ITEMS:
            self.fail(path.rstrip("."), f"more than {MAX_ITEMS:,} items in one kill (nested ones counted)")
            return
        for i, item in enumerate(items):
            if _item_ok(item):  # the common case, without building the item's path
                if "items" in item:
                    self.items(item["items"], f"{path.rstrip('.')}[{i}].items.", depth + 1)
                continue
            p = f"{path.rstrip('.')}[{i}]."
            if not isinstance(item, dict):
                self.fail(p.rstrip("."), "must be an object")
                continue
            self.int_field(item, "item_type_id", p, required=True, positive=True)
            self.int_field(item, "flag", p, required=True)
            self.int_field(item, "singleton", p, required=True)
            self.int_field(item, "quantity_destroyed", p, required=False)
            self.int_field(item, "quantity_dropped", p, required=False)
            if "items" in item:
                self.items(item["items"], p + "items.", depth + 1)


def check_esi(esi: object, path: str = "") -> list[str]:
    """Every problem with an ESI killmail body (an empty list means it is valid)."""
    c = _Checker()
    if not isinstance(esi, dict):
        return [f"{path.rstrip('.') or 'killmail'}: must be an object"]
    c.int_field(esi, "killmail_id", path, required=True, positive=True)
    c.int_field(esi, "solar_system_id", path, required=True, positive=True)
    c.int_field(esi, "war_id", path, required=False, positive=True)
    c.int_field(esi, "moon_id", path, required=False, positive=True)
    when = esi.get("killmail_time")
    if not isinstance(when, str):
        c.fail(path + "killmail_time", "required ISO 8601 string")
    elif (parsed := parse_time(when)) is None:
        c.fail(path + "killmail_time", f"not an ISO 8601 time: {when[:40]!r}")
    elif parsed < EARLIEST_KILL:
        c.fail(path + "killmail_time", f"{when[:40]!r} is before EVE Online opened (2003-05-06)")
    victim = esi.get("victim")
    if not isinstance(victim, dict):
        c.fail(path + "victim", "required object")
    else:
        vp = path + "victim."
        c.int_field(victim, "ship_type_id", vp, required=True, positive=True)
        c.int_field(victim, "damage_taken", vp, required=True)
        c.entity(victim, vp)
        if "items" in victim:
            c.items(victim["items"], vp + "items.", 1)
        position = victim.get("position")
        if position is not None:
            if not isinstance(position, dict):
                c.fail(vp + "position", "must be an object")
            else:
                for axis in ("x", "y", "z"):
                    if not _is_number(position.get(axis)):
                        c.fail(f"{vp}position.{axis}", "required number")
    attackers = esi.get("attackers")
    if not isinstance(attackers, list) or not attackers:
        c.fail(path + "attackers", "required non-empty array")
    elif len(attackers) > MAX_ATTACKERS:
        c.fail(path + "attackers", f"{len(attackers):,} attackers; at most {MAX_ATTACKERS:,} (more than EVE produces)")
    else:
        for i, attacker in enumerate(attackers):
            if _attacker_ok(attacker):  # the common case, without building the attacker's path
                continue
            ap = f"{path}attackers[{i}]."
            if not isinstance(attacker, dict):
                c.fail(ap.rstrip("."), "must be an object")
                continue
            c.int_field(attacker, "damage_done", ap, required=True)
            c.entity(attacker, ap)
            c.int_field(attacker, "ship_type_id", ap, required=False, positive=True)
            c.int_field(attacker, "weapon_type_id", ap, required=False, positive=True)
            if not isinstance(attacker.get("final_blow"), bool):
                c.fail(ap + "final_blow", "required boolean")
            if "security_status" in attacker and not _is_number(attacker["security_status"]):
                c.fail(ap + "security_status", "must be a number")
    return c.result()


def parse_time(value: str) -> datetime | None:
    """ESI writes `2026-03-25T14:26:36Z`; accept any ISO 8601 time, naive ones taken as UTC."""
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        # OverflowError: 0001-01-01T00:00:00+14:00 is in year 0 in UTC, which datetime cannot hold.
        return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def _hash(value: object, path: str, errors: list[str]) -> str:
    if not isinstance(value, str):
        errors.append(f"{path}: required string (40 hex digits)")
        return ""
    if not HASH_RE.match(value):
        errors.append(f"{path}: must be 40 lowercase hex digits")
    return value


def _zkb(value: object, path: str, errors: list[str]) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        errors.append(f"{path}: must be an object")
        return None
    for key in ("fittedValue", "droppedValue", "destroyedValue", "totalValue"):
        if key in value and value[key] is not None and not _is_number(value[key]):
            errors.append(f"{path}.{key}: must be a number")
    return value


def _esi_with_id(esi: object, killmail_id: int, path: str, errors: list[str]) -> dict[str, Any] | None:
    found = check_esi(esi, path + ".")
    errors.extend(found)
    if found or not isinstance(esi, dict):
        return None
    if esi["killmail_id"] != killmail_id:
        errors.append(f"{path}.killmail_id: {esi['killmail_id']} does not match {killmail_id}")
        return None
    return esi


def parse_submission(item: object) -> Submission:
    """Reduce one input item to a Submission, or raise Invalid listing every problem."""
    if not isinstance(item, dict):
        raise Invalid([f"killmail: must be an object, got {type(item).__name__}"])
    errors: list[str] = []

    if "package" in item:  # RedisQ
        package = item["package"]
        if package is None:
            raise Invalid(["package: null (RedisQ sends this when no kill is waiting)"])
        if not isinstance(package, dict):
            raise Invalid(["package: must be an object"])
        kill_id = package.get("killID")
        if not _is_int(kill_id) or kill_id <= 0:
            raise Invalid(["package.killID: required positive integer"])
        zkb = _zkb(package.get("zkb"), "package.zkb", errors)
        raw_hash = (zkb or {}).get("hash", (package.get("killmail") or {}).get("killmail_hash"))
        killmail_hash = _hash(raw_hash, "package.zkb.hash", errors)
        esi = None
        if package.get("killmail") is not None:
            esi = _esi_with_id(package["killmail"], kill_id, "package.killmail", errors)
        if errors:
            raise Invalid(errors)
        return Submission(kill_id, killmail_hash, esi, zkb)

    if "esi" in item or ("hash" in item and "victim" not in item):  # R2Z2
        kill_id = item.get("killmail_id")
        if not _is_int(kill_id) or kill_id <= 0:
            raise Invalid(["killmail_id: required positive integer"])
        killmail_hash = _hash(item.get("hash"), "hash", errors)
        zkb = _zkb(item.get("zkb"), "zkb", errors)
        esi = None
        if item.get("esi") is not None:
            esi = _esi_with_id(item["esi"], kill_id, "esi", errors)
        if errors:
            raise Invalid(errors)
        return Submission(kill_id, killmail_hash, esi, zkb)

    # A plain ESI killmail, with the hash ESI itself leaves out.
    errors.extend(check_esi(item))
    killmail_hash = _hash(item.get("killmail_hash"), "killmail_hash", errors)
    zkb = _zkb(item.get("zkb"), "zkb", errors)
    if errors:
        raise Invalid(errors)
    esi = {k: v for k, v in item.items() if k not in ("killmail_hash", "zkb")}
    return Submission(item["killmail_id"], killmail_hash, esi, zkb)
