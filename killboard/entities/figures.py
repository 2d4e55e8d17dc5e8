"""Entity figures (kills, losses, ISK, solo, months, top lists), kept in the kills' own transaction.

Each stored kill adds its share to two small tables, and retention takes the same share back, so a
page reads a few rows instead of counting kills. The share of a kill is worked out from its row in
the participant index (storage/participants.py: the pilots) and the kill's time, system and value,
both when it is stored and when it is pruned, so adding and taking back are exact mirrors.

- `entity_months`: per entity and calendar month, kills, losses, solo kills, ISK destroyed and
  lost (whole ISK: integers add and subtract exactly, floats would drift). Totals are the sum of
  the entity's months: a few dozen rows at most.
- `entity_tops`: per entity, counts of the things its top lists rank: ships flown (on kills),
  ships lost, systems, and opponents (the same kind of entity on the other side: the victim's on a
  kill, the final blow's on a loss; for a system or region: the alliances that dealt final blows).
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ..kill.enrich import CATEGORY_SHIP, MAX_NPC_CHARACTER_ID, MAX_NPC_CORPORATION_ID, NEVER_SOLO_GROUPS
from ..kill.staticdata import StaticData, TypeInfo
from ..storage.figures_schema import SCHEMA  # noqa: F401 - the tables live in the storage stage
from ..storage.participants import Kind, PilotRow
from ..storage.sqlite import insert_many

# What an entity_tops row counts.
FLOWN = 1  # ship types its pilots flew on kills
LOST = 2  # ship types it lost (for a place: lost there)
SYSTEM = 3  # systems it fought in
OPPONENT = 4  # the same kind on the other side (places: the final blows' alliances)
TOP_NAMES = {FLOWN: "ships_flown", LOST: "ships_lost", SYSTEM: "systems", OPPONENT: "opponents"}

PILOT_KINDS = (Kind.CHARACTER, Kind.CORPORATION, Kind.ALLIANCE, Kind.SHIP, Kind.GROUP)
PLACE_KINDS = (Kind.SYSTEM, Kind.REGION)
EntityKey = tuple[int, int]  # (kind, id)
Month = tuple[int, int, int, int, int]  # kills, losses, solo, isk_destroyed, isk_lost


@dataclass(slots=True)
class Share:
    """What one or more kills add to the figures (or, with sign -1, take away)."""

    months: dict[tuple[int, int, int], list[int]] = field(default_factory=dict)
    tops: Counter[tuple[int, int, int, int]] = field(default_factory=Counter)

    def month(self, key: EntityKey, month: int, row: Month, sign: int) -> None:
        have = self.months.setdefault((*key, month), [0, 0, 0, 0, 0])
        for i, value in enumerate(row):
            have[i] += sign * value

    def merge(self, other: Share) -> None:
        for key, row in other.months.items():
            have = self.months.setdefault(key, [0, 0, 0, 0, 0])
            for i, value in enumerate(row):
                have[i] += value
        self.tops.update(other.tops)

    def top(self, key: EntityKey, what: int, other: int, sign: int) -> None:
        if other:
            # dict.get, not Counter's `+=`: a new key there goes through Python-level __missing__,
            # and a kill adds ~50 of them (issue 21's ingest profile: ~5% of the server's CPU).
            top = (*key, what, other)
            self.tops[top] = self.tops.get(top, 0) + sign


def month_of(kill_time: int) -> int:
    t = time.gmtime(kill_time)
    return t.tm_year * 12 + t.tm_mon - 1


def _pilot_entities(pilot: PilotRow, types: Mapping[int, TypeInfo]) -> tuple[int, int, int, int, int]:
    """A pilot's ids in PILOT_KINDS order (a tuple, not a dict: a kill has a dozen pilots)."""
    ship = pilot[4]
    info = types.get(ship)
    return pilot[0], pilot[1], pilot[2], ship, info.group_id if info else 0


def is_solo(pilots: Sequence[PilotRow], static: StaticData) -> bool:
    """zKillboard's solo (kill/enrich.py `_flags`), from the participant rows alone."""
    if not pilots:
        return False
    info = static.types.get(pilots[0][4])
    if info is None or info.category_id != CATEGORY_SHIP or info.group_id in NEVER_SOLO_GROUPS:
        return False
    # kill/enrich.py is_npc_attacker on the row's ids (0 where none), without a dict per pilot.
    players = 0
    for pilot in pilots[1:]:
        if pilot[0] > MAX_NPC_CHARACTER_ID or pilot[1] > MAX_NPC_CORPORATION_ID:
            players += 1
            if players > 1:
                return False
    return players == 1


# One kill's share before it is added (sign 1): its month rows (each key once) and its top-list rows.
KillShare = tuple[list[tuple[tuple[int, int, int], Month]], list[tuple[int, int, int, int]]]


def add_kill(
    share: Share,
    pilots: Sequence[PilotRow],
    kill_time: int,
    system_id: int,
    value: float,
    static: StaticData,
    sign: int = 1,
) -> None:
    """Add (sign 1) or take back (sign -1) one kill's share (kill_share)."""
    add_share(share, kill_share(pilots, kill_time, system_id, value, static), sign)


def add_share(share: Share, kill: KillShare, sign: int = 1) -> None:
    """Add (sign 1) or take back (sign -1) a kill_share."""
    months, tops = share.months, share.tops
    rows, counted = kill
    for key, row in rows:
        have = months.get(key)
        if have is None:
            months[key] = list(row) if sign == 1 else [sign * v for v in row]
        else:
            have[0] += sign * row[0]
            have[1] += sign * row[1]
            have[2] += sign * row[2]
            have[3] += sign * row[3]
            have[4] += sign * row[4]
    if sign == 1:
        tops.update(counted)  # one C call
    else:
        for key4 in counted:
            tops[key4] = tops.get(key4, 0) + sign  # dict.get, not Counter's `-=` (its __missing__)


def kill_share(
    pilots: Sequence[PilotRow], kill_time: int, system_id: int, value: float, static: StaticData
) -> KillShare:
    """One kill's share: each entity once however many of its pilots took part, as a kill if any
    is among the attackers, as a loss if it is the victim's. It depends on the kill alone, so the
    pipeline works it out while preparing the kill (backlog.preparer), before the write.

    Written out by hand (no dict per pilot, no call per row): it was ~150 us a kill, 10% of a
    broadcast kill's CPU (issue 21)."""
    if not pilots:
        return [], []
    types = static.types
    isk = round(value)
    month = month_of(kill_time)
    solo = 1 if is_solo(pilots, static) else 0
    victim = _pilot_entities(pilots[0], types)
    victim_ship = victim[3]
    # Per entity (kind, id): the ships its pilots flew on the kill, if any attacked.
    killed: dict[EntityKey, set[int]] = {}
    final: tuple[int, ...] | None = None
    first: tuple[int, ...] = (0, 0, 0, 0, 0)
    for n, pilot in enumerate(pilots):
        if n == 0:
            continue
        entities = _pilot_entities(pilot, types)
        if n == 1:
            first = entities
        if final is None and pilot[6]:
            final = entities
        ship = pilot[4]
        for pilot_kind, entity in zip(PILOT_KINDS, entities, strict=True):
            if entity:
                ships = killed.get((pilot_kind, entity))
                if ships is None:
                    killed[(pilot_kind, entity)] = {ship}
                else:
                    ships.add(ship)
    if final is None:
        final = first  # no final blow recorded: the first attacker stands in (none: zeros)
    lost: set[EntityKey] = {(k, entity) for k, entity in zip(PILOT_KINDS, victim, strict=True) if entity}

    month_rows: list[tuple[tuple[int, int, int], Month]] = []
    counted: list[tuple[int, int, int, int]] = []
    top = counted.append
    for key in killed.keys() | lost:
        kind, entity = key
        slot = _SLOT[kind]
        ships = killed.get(key)
        did_lose = key in lost
        row = (1, 0, solo, isk, 0) if not did_lose else (0, 1, 0, 0, isk) if ships is None else (1, 1, solo, isk, isk)
        month_rows.append(((kind, entity, month), row))
        if system_id:
            top((kind, entity, SYSTEM, system_id))
        if ships is not None:
            if kind != _SHIP:
                for ship in ships:
                    if ship:
                        top((kind, entity, FLOWN, ship))
            if victim[slot]:
                top((kind, entity, OPPONENT, victim[slot]))
        if did_lose:
            if kind != _SHIP and victim_ship:
                top((kind, entity, LOST, victim_ship))
            if final[slot]:
                top((kind, entity, OPPONENT, final[slot]))
    system = static.systems.get(system_id)
    places = [(Kind.SYSTEM, system_id)] + ([(Kind.REGION, system.region_id)] if system else [])
    for kind, place in places:
        month_rows.append(((kind, place, month), (1, 0, solo, isk, 0)))
        if victim_ship:
            top((kind, place, LOST, victim_ship))
        if final[2]:
            top((kind, place, OPPONENT, final[2]))  # the final blow's alliance
    return month_rows, counted


_SHIP = int(Kind.SHIP)  # an int: an enum member's lookup on its class costs more than the compare
# Where a kind's id sits in _pilot_entities' tuple.
_SLOT: dict[int, int] = {kind: i for i, kind in enumerate(PILOT_KINDS)}


UPSERT_MONTH = (
    "INSERT INTO entity_months (kind, id, month, kills, losses, solo, isk_destroyed, isk_lost)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (kind, id, month) DO UPDATE SET"
    " kills = kills + excluded.kills, losses = losses + excluded.losses, solo = solo + excluded.solo,"
    " isk_destroyed = isk_destroyed + excluded.isk_destroyed, isk_lost = isk_lost + excluded.isk_lost"
)
UPSERT_TOP = (
    "INSERT INTO entity_tops (kind, id, what, other, n) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (kind, id, what, other) DO UPDATE SET n = n + excluded.n"
)


def apply(db: sqlite3.Connection, share: Share) -> None:
    """Write a share in the caller's transaction (in the database thread); rows that fall to
    nothing are deleted."""
    months = [(*key, *row) for key, row in share.months.items() if any(row)]
    tops = [(*key, n) for key, n in share.tops.items() if n]
    insert_many(db, UPSERT_MONTH, months)  # a few statements of many rows: see insert_many
    insert_many(db, UPSERT_TOP, tops)
    if any(row[3] < 0 or row[4] < 0 for row in months):
        db.executemany(
            "DELETE FROM entity_months WHERE kind = ? AND id = ? AND month = ? AND kills <= 0 AND losses <= 0",
            [row[:3] for row in months if row[3] < 0 or row[4] < 0],
        )
    if any(n < 0 for *_, n in tops):
        db.executemany(
            "DELETE FROM entity_tops WHERE kind = ? AND id = ? AND what = ? AND other = ? AND n <= 0",
            [row[:4] for row in tops if row[4] < 0],
        )


@dataclass(frozen=True, slots=True)
class Figures:
    """An entity's figures as the page and GET /api/{kind}/{id} show them."""

    kills: int
    losses: int
    solo: int
    isk_destroyed: int
    isk_lost: int
    months: list[dict[str, int | str]]
    tops: dict[str, list[tuple[int, int]]]

    @property
    def efficiency(self) -> float | None:
        """ISK destroyed over all ISK involved, as zKillboard shows it; None before any."""
        total = self.isk_destroyed + self.isk_lost
        return round(100 * self.isk_destroyed / total, 1) if total else None


def figures(
    months: Iterable[Sequence[int]],
    tops: Iterable[Sequence[int]],
    now: float,
    top_n: int = 10,
    itself: int | None = None,
) -> Figures:
    """Figures from an entity's rows: (month, kills, losses, solo, isk_destroyed, isk_lost) and
    (what, other, n); `months` lists the last 12 calendar months up to `now`, empty ones too, or,
    for an entity with nothing in them, the 12 up to its last month with anything.
    `itself`: a pilot, corporation or alliance, left out of its own opponents (the rows count
    its friendly fire: its own pilots killed by its own, on kills and on losses alike); a ship
    type fighting its own type stays its opponent."""
    totals = [0, 0, 0, 0, 0]
    by_month: dict[int, Sequence[int]] = {}
    for row in months:
        by_month[row[0]] = row
        for i in range(5):
            totals[i] += row[i + 1]
    current = month_of(int(now))
    # An entity quiet for a year (or known only from kills imported from an archive) shows the
    # year up to its last active month: twelve rows of zeros would tell nothing.
    end = max((m for m in by_month if m <= current), default=current)
    if end > current - 12:
        end = current
    last12: list[dict[str, int | str]] = []
    for m in range(end - 11, end + 1):
        row = by_month.get(m, (m, 0, 0, 0, 0, 0))
        last12.append(
            {
                "month": f"{m // 12:04d}-{m % 12 + 1:02d}",
                "kills": row[1],
                "losses": row[2],
                "isk_destroyed": row[4],
                "isk_lost": row[5],
            }
        )
    ranked: dict[int, list[tuple[int, int]]] = {what: [] for what in TOP_NAMES}
    for what, other, n in tops:
        if what == OPPONENT and other == itself:
            continue
        ranked.setdefault(what, []).append((other, n))
    top_lists = {
        TOP_NAMES[what]: sorted(rows, key=lambda r: (-r[1], r[0]))[:top_n]
        for what, rows in ranked.items()
        if what in TOP_NAMES
    }
    return Figures(totals[0], totals[1], totals[2], totals[3], totals[4], last12, top_lists)


def top_kind(kind: Kind, what: int) -> str:
    """The kind of entity a top list names (to link and name its rows)."""
    if what in (FLOWN, LOST):
        return "ship"
    if what == SYSTEM:
        return "system"
    if kind in PLACE_KINDS:
        return "alliance"
    return kind.name.lower()
