"""Older pages of a filtered feed: the stored kills before a kill id that a filter matches.

A filtered page's newest matches come from the keys kept in memory for the newest kills
(web/recent.py). Past those, each older kill is tested on its rows instead of its document:
its kill row (system, value) and its participant row (killboard/storage/participants.py), from
which `row_keys` makes the same keys `recent.page_keys` makes of the rendered kill (tested on
every real kill). That is ~25 µs a kill (~90 µs a fleet fight's) against ~0.7 ms to render one,
and a view looks at most `SCAN` rows: a rare filter's page says how far it looked and goes on
from there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from ..kill.enrich import (
    ABYSSAL_REGIONS,
    CATEGORY_SHIP,
    MAX_NPC_CHARACTER_ID,
    MAX_NPC_CORPORATION_ID,
    NEVER_SOLO_GROUPS,
    POCHVEN_REGION,
    WSPACE_REGIONS,
)
from ..kill.staticdata import StaticData
from ..kill.topics import ALL, SHIP_GROUP_TOPICS, Condition, Key
from ..storage import participants
from ..storage.participants import PilotRow
from ..storage.store import Store
from .reads import ReadLimits
from .recent import PAGE_KINDS

# Kill rows one view looks at, at most: ~25 µs each for the 82 real kills, ~80-95 µs for the
# fleet fights' (a thread's ~25-95 ms a view), against ~0.7 ms to render a kill.
SCAN = 1000
_CHUNK = 250
# A kill's rows `row_keys` reads, newest first before a kill id.
_OLDER_ROWS = (
    "SELECT k.killmail_id, k.system_id, k.total_value, p.pilots FROM kills k JOIN participants p USING (seq)"
    " WHERE k.killmail_id < ? ORDER BY k.killmail_id DESC LIMIT ?"
)
_PLAYERS = ("character", "corporation", "alliance")  # a pilot row's first three fields


def row_keys(
    system_id: int,
    total_value: float,
    pilots: Sequence[PilotRow],
    static: StaticData,
    kinds: Collection[str] = PAGE_KINDS,
) -> frozenset[Key]:
    """The page keys of a stored kill of these `kinds` (recent.PAGE_KINDS: all of them), from its
    rows: kill/topics.py `kill_facts` of the enriched kill, less the kinds no page filters by."""
    keys: set[Key] = {ALL}
    system = static.systems.get(system_id)
    if system_id:
        keys.add(("system", system_id))
    if system is not None:
        keys.add(("region", system.region_id))
    for field, kind in enumerate(_PLAYERS):
        if kind in kinds:
            keys.update((kind, pilot[field]) for pilot in pilots if pilot[field])
    ships = {pilot[4] for pilot in pilots if pilot[4]} if "ship" in kinds or "group" in kinds else set()
    keys.update(("ship", ship) for ship in ships)
    keys.update(("group", info.group_id) for ship in ships if (info := static.types.get(ship)) is not None)
    if "topic" not in kinds:
        return frozenset(keys)
    if total_value >= 10e9:
        keys.add(("topic", "10b"))
    if total_value >= 5e9:
        keys.add(("topic", "5b"))
    # kill/enrich.py is_npc_attacker on the row's ids (0 where none): none, one or more players
    players = 0
    for pilot in pilots[1:]:
        if pilot[0] > MAX_NPC_CHARACTER_ID or pilot[1] > MAX_NPC_CORPORATION_ID:
            players += 1
            if players > 1:
                break
    if not players:
        keys.add(("topic", "npc"))
    victim = static.types.get(pilots[0][4]) if pilots and pilots[0][4] else None
    # kill/enrich.py's solo: one player among the attackers, a ship lost that zKillboard may call solo
    solo_hull = victim is not None and victim.category_id == CATEGORY_SHIP and victim.group_id not in NEVER_SOLO_GROUPS
    if players == 1 and solo_hull:
        keys.add(("topic", "solo"))
    if system is not None:
        region = system.region_id
        if region in WSPACE_REGIONS:
            keys.add(("topic", "wspace"))
        elif region in ABYSSAL_REGIONS:
            keys.add(("topic", "abyssal"))
        else:
            sec = system.security
            keys.add(("topic", "highsec" if sec >= 0.45 else "lowsec" if sec > 0.0 else "nullsec"))
        if region == POCHVEN_REGION:
            keys.add(("topic", "pochven"))
    if victim is not None:
        keys.update(("topic", topic) for topic, groups in SHIP_GROUP_TOPICS.items() if victim.group_id in groups)
    return frozenset(keys)


@dataclass(frozen=True, slots=True)
class Older:
    """One older page's matches, newest first, and how far it looked."""

    ids: list[int]
    # The kill id the next page starts before; None: nothing older is stored.
    next_before: int | None
    scanned: int  # kill rows looked at


async def older(
    store: Store,
    static: StaticData,
    limits: ReadLimits,
    condition: Condition,
    before: int,
    want: int,
    scan: int | None = None,
) -> Older:
    """Up to `want` stored kills before kill `before` that `condition` holds for, newest first,
    looking at no more than `scan` kill rows. Each chunk is read and tested in one of the
    server's render slots (`limits.render`, shared with the large API reads), so many distinct
    older pages asked at once queue instead of filling the threads and the GIL. Kills still
    waiting for the participant index (after an upgrade) are not looked at."""
    scan = SCAN if scan is None else scan
    found: list[int] = []
    scanned = 0
    cursor = before
    while scanned < scan and len(found) < want:
        async with limits.render():
            rows = await store.query(_OLDER_ROWS, (cursor, min(_CHUNK, scan - scanned)))
            matched = await asyncio.to_thread(_matching, rows, condition, static) if rows else []
        if not rows:
            return Older(found, None, scanned)
        for killmail_id, hit in zip((row[0] for row in rows), matched, strict=True):
            scanned += 1
            cursor = killmail_id
            if hit:
                found.append(killmail_id)
                if len(found) == want:
                    break
    return Older(found, cursor, scanned)


def _matching(rows: Sequence[tuple[int, int, float, bytes]], condition: Condition, static: StaticData) -> list[bool]:
    wanted = condition.keys
    kinds = {key[0] for key in wanted}  # only the keys the filter names are worked out
    return [
        wanted <= row_keys(sid, value or 0.0, participants.unpack(blob), static, kinds) for _, sid, value, blob in rows
    ]
