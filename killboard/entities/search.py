"""Name search: every name the server knows, prefix and case-insensitive, in memory.

One sorted list of casefolded names (ships, ship groups, systems, constellations and regions in
every language the static data has; characters, corporations and alliances from the names table),
searched with bisect: a query costs a binary search and a short scan, whatever the count.
New names are merged in as they arrive (the names table's updated_at), in small sorted runs.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from ..kill.enrich import CATEGORY_SHIP
from ..kill.staticdata import StaticData

# The kinds in the order a tie ranks them: people first, then places, then ships.
KIND_RANK = {
    "character": 0,
    "corporation": 1,
    "alliance": 2,
    "system": 3,
    "region": 4,
    "constellation": 5,
    "ship": 6,
    "group": 7,
}
PLAYER_KINDS = ("character", "corporation", "alliance")
MAX_QUERY = 100  # characters; EVE names are at most 50
SCAN = 400  # entries looked at past the first match: plenty to rank a page of results


@dataclass(frozen=True, slots=True, order=True)
class Entry:
    key: str  # casefolded name: what is searched
    rank: int  # KIND_RANK
    id: int
    kind: str
    name: str  # as written
    lang: str  # the language of `name` ("" for players and English-only names)


@dataclass(slots=True)
class SearchIndex:
    """The sorted entries; `add` keeps them sorted (an insort each: fine for names arriving a few
    at a time, while a bulk load sorts once)."""

    # (entries, their keys): one attribute, so a search never sees one list new and one old.
    _sorted: tuple[list[Entry], list[str]] = field(default_factory=lambda: ([], []))
    _players: dict[int, str] = field(default_factory=dict)  # id -> name indexed: renames replace

    def load(self, entries: Iterable[Entry]) -> None:
        """Merge many entries at once (may run in a thread: searches keep reading the old lists
        until both new ones are swapped in, in one assignment)."""
        merged = sorted(set(self.entries) | set(entries))
        self._sorted = (merged, [e.key for e in merged])
        self._players.update((e.id, e.name) for e in merged if e.kind in PLAYER_KINDS)

    @property
    def entries(self) -> list[Entry]:
        return self._sorted[0]

    def add_player(self, kind: str, entity_id: int, name: str) -> None:
        if not name or kind not in PLAYER_KINDS or self._players.get(entity_id) == name:
            return
        old = self._players.get(entity_id)
        if old is not None:
            self._remove(Entry(old.casefold(), KIND_RANK[kind], entity_id, kind, old, ""))
        entry = Entry(name.casefold(), KIND_RANK[kind], entity_id, kind, name, "")
        entries, keys = self._sorted
        i = bisect_left(entries, entry)
        entries.insert(i, entry)
        keys.insert(i, entry.key)
        self._players[entity_id] = name

    def _remove(self, entry: Entry) -> None:
        entries, keys = self._sorted
        i = bisect_left(entries, entry)
        if i < len(entries) and entries[i] == entry:
            del entries[i]
            del keys[i]

    def __len__(self) -> int:
        return len(self.entries)

    def search(self, query: str, lang: str = "en", limit: int = 10) -> list[Entry]:
        """Names starting with `query` (case-insensitive): exact matches first, then the shortest,
        one entry per (kind, id), named in `lang` where that has a name, else English."""
        key = " ".join(query.split()).casefold()[:MAX_QUERY]
        if not key:
            return []
        entries, keys = self._sorted
        start = bisect_left(keys, key)
        found: dict[tuple[str, int], Entry] = {}
        for entry in _scan(entries, start, key):
            have = found.get((entry.kind, entry.id))
            if have is None or _better(entry, have, key, lang):
                found[(entry.kind, entry.id)] = entry
        ranked = sorted(found.values(), key=lambda e: (e.key != key, len(e.key), e.rank, e.key, e.id))
        return ranked[:limit]


def _scan(entries: list[Entry], start: int, key: str) -> Iterator[Entry]:
    for entry in entries[start : start + SCAN]:
        if not entry.key.startswith(key):
            return
        yield entry


def _better(entry: Entry, have: Entry, key: str, lang: str) -> bool:
    """Which of two names of one thing to show: an exact match, else the reader's language."""
    if (entry.key == key) != (have.key == key):
        return entry.key == key
    return entry.lang == lang and have.lang != lang


def static_entries(static: StaticData) -> Iterator[Entry]:
    """Ships (types of the ship category), ship groups, systems, constellations, regions, NPC
    corporations."""
    for info in static.types.values():
        if info.category_id == CATEGORY_SHIP:
            for lang, name in static.type_names(info.type_id).items():
                yield Entry(name.casefold(), KIND_RANK["ship"], info.type_id, "ship", name, lang)
    for group in static.groups.values():
        if group.category_id == CATEGORY_SHIP:
            for lang, name in group.names.items():
                yield Entry(name.casefold(), KIND_RANK["group"], group.group_id, "group", name, lang)
    for system in static.systems.values():
        yield Entry(system.name.casefold(), KIND_RANK["system"], system.system_id, "system", system.name, "")
    for c in static.constellations.values():
        yield Entry(c.name.casefold(), KIND_RANK["constellation"], c.constellation_id, "constellation", c.name, "")
    for region in static.regions.values():
        for lang, name in region.names.items():
            yield Entry(name.casefold(), KIND_RANK["region"], region.region_id, "region", name, lang)
    for npc in static.npc_corporations.values():  # ESI is never asked for their names
        yield Entry(npc.name.casefold(), KIND_RANK["corporation"], npc.corporation_id, "corporation", npc.name, "")


def player_kind(entity_id: int, category: str) -> str | None:
    """A player name's kind: ESI's category when the resolver gave it, else CCP's id ranges
    (names stored with kills carry no category); None where the ranges overlap (old entities)."""
    if category in PLAYER_KINDS:
        return category
    if 3_000_000 <= entity_id < 4_000_000 or 90_000_000 <= entity_id < 98_000_000 or entity_id >= 2_100_000_000:
        return "character"
    if 1_000_000 <= entity_id < 2_000_000 or 98_000_000 <= entity_id < 99_000_000:
        return "corporation"
    if 99_000_000 <= entity_id < 100_000_000:
        return "alliance"
    return None
