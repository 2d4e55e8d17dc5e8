"""Load the bundled EVE Online static data (data/, see data/README.md) into lookup tables.

The caller owns the returned StaticData (load once at startup, keep it in app state); this
module keeps no state of its own.
"""

import gzip
import zlib
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import ujson

LANGUAGES: tuple[str, ...] = ("en", "de", "es", "fr", "ja", "ko", "ru", "zh")
Names = dict[str, str]  # translation object; "en" always present when the thing is known

# type_names() results kept per StaticData: enough for the types seen in a busy hour, while
# a full cache stays around 2 MB.
TYPE_NAMES_CACHE_SIZE = 2048


@dataclass(frozen=True, slots=True)
class TypeInfo:
    type_id: int
    group_id: int
    category_id: int
    name: str  # English, from the current SDE build
    base_price: float | None


@dataclass(frozen=True, slots=True)
class GroupInfo:
    group_id: int
    category_id: int
    names: Names


@dataclass(frozen=True, slots=True)
class CategoryInfo:
    category_id: int
    names: Names


@dataclass(frozen=True, slots=True)
class SystemInfo:
    system_id: int
    name: str
    security: float  # raw, unrounded
    constellation_id: int
    region_id: int
    wormhole_class_id: int | None


@dataclass(frozen=True, slots=True)
class ConstellationInfo:
    constellation_id: int
    name: str
    region_id: int


@dataclass(frozen=True, slots=True)
class RegionInfo:
    region_id: int
    names: Names  # English only: {"en": name}
    faction_id: int | None


@dataclass(frozen=True, slots=True)
class FactionInfo:
    faction_id: int
    names: Names


@dataclass(frozen=True, slots=True)
class NpcCorporation:
    corporation_id: int
    name: str
    faction_id: int | None


@dataclass(frozen=True, slots=True)
class FlagInfo:
    flag_id: int
    name: str  # e.g. "Cargo", "HiSlot0"
    text: str  # e.g. "Cargo", "High power slot 1"


class TypeTranslations:
    """Non-English type names, kept as the compressed file's bytes (~2.7 MB instead of ~13 MB
    inflated or far more as 48,000 dicts); a lookup inflates one 64-line chunk (~40 µs)."""

    __slots__ = ("_blob", "_first_ids", "_offsets", "languages")

    def __init__(
        self,
        blob: bytes = b"",
        chunks: Sequence[Sequence[int]] = (),
        languages: tuple[str, ...] = (),
    ) -> None:
        """blob: a gzip file of one member per chunk of TSV lines "type_id<TAB>name…" sorted
        by type_id; chunks: (first type_id, byte offset of its member) per chunk, in order;
        languages: the language of each name column."""
        self._blob = blob
        self._first_ids = [first for first, _ in chunks]
        self._offsets = [offset for _, offset in chunks] + [len(blob)]
        self.languages = languages

    def get(self, type_id: int) -> list[str] | None:
        """The names (in ``languages`` order, "" where missing) or None if the type has none."""
        i = bisect_right(self._first_ids, type_id) - 1
        if i < 0:
            return None
        text = b"\n" + zlib.decompress(self._blob[self._offsets[i] : self._offsets[i + 1]], wbits=31)
        key = b"\n%d\t" % type_id
        start = text.find(key)
        if start < 0:
            return None
        start += len(key)
        return text[start : text.index(b"\n", start)].decode("utf-8").split("\t")


def _type_names_lookup(types: dict[int, TypeInfo], translations: TypeTranslations) -> Callable[[int], Names]:
    @lru_cache(maxsize=TYPE_NAMES_CACHE_SIZE)
    def type_names(type_id: int) -> Names:
        info = types.get(type_id)
        if info is None:
            return {}
        names = {"en": info.name}
        row = translations.get(type_id)
        if row is not None:
            names.update((lang, name) for lang, name in zip(translations.languages, row, strict=True) if name)
        return names

    return type_names


TypeFields = tuple[Names, int, Names | None, int]  # (type names, group id, group names, category id)


def _type_fields_lookup(
    types: dict[int, TypeInfo], groups: dict[int, GroupInfo], type_names: Callable[[int], Names]
) -> Callable[[int], TypeFields | None]:
    # Enrichment asks this ~50 times a kill (ship, weapons, every item): three lookups and a
    # dict each time were ~5% of the ingest's CPU; a few thousand types cover nearly every kill.
    @lru_cache(maxsize=TYPE_NAMES_CACHE_SIZE)
    def type_fields(type_id: int) -> TypeFields | None:
        info = types.get(type_id)
        if info is None:
            return None
        group = groups.get(info.group_id)
        names = type_names(type_id) or {"en": info.name}
        return names, info.group_id, group.names if group else None, info.category_id

    return type_fields


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class StaticData:
    """Everything the server looks up by id. All fields default to empty, so tests can build
    a small StaticData by hand."""

    types: dict[int, TypeInfo] = field(default_factory=dict)
    groups: dict[int, GroupInfo] = field(default_factory=dict)
    categories: dict[int, CategoryInfo] = field(default_factory=dict)
    systems: dict[int, SystemInfo] = field(default_factory=dict)
    constellations: dict[int, ConstellationInfo] = field(default_factory=dict)
    regions: dict[int, RegionInfo] = field(default_factory=dict)
    factions: dict[int, FactionInfo] = field(default_factory=dict)
    npc_corporations: dict[int, NpcCorporation] = field(default_factory=dict)
    flags: dict[int, FlagInfo] = field(default_factory=dict)
    jita_prices: dict[int, float] = field(default_factory=dict)
    fixed_prices: dict[int, float] = field(default_factory=dict)
    type_translations: TypeTranslations = field(default_factory=TypeTranslations)
    _type_names: Callable[[int], Names] = field(init=False)
    _type_fields: Callable[[int], TypeFields | None] = field(init=False)

    def __post_init__(self) -> None:
        lookup = _type_names_lookup(self.types, self.type_translations)
        object.__setattr__(self, "_type_names", lookup)
        object.__setattr__(self, "_type_fields", _type_fields_lookup(self.types, self.groups, lookup))

    def type_names(self, type_id: int) -> Names:
        """All names the data has for the type ("en" always, other languages where the older
        translated SDE has the type); {} for an unknown type. Cached: the same dict may be
        returned again, so callers must not mutate it."""
        return self._type_names(type_id)

    def type_fields(self, type_id: int) -> TypeFields | None:
        """(names, group id, group names or None, category id) of a known type, None for an
        unknown one. Cached like type_names: callers must not mutate what it returns."""
        return self._type_fields(type_id)

    def __repr__(self) -> str:
        return f"<StaticData {len(self.types)} types, {len(self.systems)} systems>"


def _names(values: Sequence[str]) -> Names:
    return {lang: name for lang, name in zip(LANGUAGES, values, strict=True) if name}


def _read_json_gz(path: Path) -> Any:
    return ujson.loads(gzip.decompress(path.read_bytes()))


def _rows(data_dir: Path, name: str, columns: tuple[str, ...]) -> Iterator[tuple[Any, ...]]:
    """The rows of a column-wise table file, as tuples of the named columns."""
    table = _read_json_gz(data_dir / f"{name}.json.gz")
    missing = [column for column in columns if column not in table]
    if missing:
        raise ValueError(f"{data_dir / name}.json.gz lacks columns {missing}: rebuild the bundle with data/build.py")
    return zip(*(table[column] for column in columns), strict=True)


def _type_translations(data_dir: Path) -> TypeTranslations:
    index = _read_json_gz(data_dir / "type_names_index.json.gz")
    blob = (data_dir / "type_names.tsv.gz").read_bytes()
    if len(blob) != index["size"]:
        raise ValueError(f"{data_dir / 'type_names.tsv.gz'} does not match its index: rebuild")
    return TypeTranslations(blob, index["chunks"], tuple(index["languages"]))


def load_static(data_dir: Path) -> StaticData:
    """Read the bundle from data_dir.

    Takes about 0.1 s and ~25 MB: a blocking call, made once at startup.
    """
    type_translations = _type_translations(data_dir)  # first: the cheapest check for a stale bundle
    rows = _rows(data_dir, "groups", ("group_id", "category_id", "names"))
    groups = {gid: GroupInfo(gid, cid, _names(names)) for gid, cid, names in rows}
    # 53,000 types share 1,600 group ids: reuse the groups' int objects (saves ~1.4 MB).
    group_ids = {gid: gid for gid in groups}
    rows = _rows(data_dir, "types", ("type_id", "group_id", "category_id", "name", "base_price"))
    types = {tid: TypeInfo(tid, group_ids.get(gid, gid), cid, name, price) for tid, gid, cid, name, price in rows}
    rows = _rows(data_dir, "categories", ("category_id", "names"))
    categories = {cid: CategoryInfo(cid, _names(names)) for cid, names in rows}
    columns = ("system_id", "name", "security", "constellation_id", "region_id", "wormhole_class_id")
    systems = {row[0]: SystemInfo(*row) for row in _rows(data_dir, "solar_systems", columns)}
    rows = _rows(data_dir, "constellations", ("constellation_id", "name", "region_id"))
    constellations = {row[0]: ConstellationInfo(*row) for row in rows}
    rows = _rows(data_dir, "regions", ("region_id", "name", "faction_id"))
    regions = {rid: RegionInfo(rid, {"en": name}, fid) for rid, name, fid in rows}
    rows = _rows(data_dir, "factions", ("faction_id", "names"))
    factions = {fid: FactionInfo(fid, _names(names)) for fid, names in rows}
    rows = _rows(data_dir, "npc_corporations", ("corporation_id", "name", "faction_id"))
    npc_corporations = {row[0]: NpcCorporation(*row) for row in rows}
    rows = _rows(data_dir, "inventory_flags", ("flag_id", "name", "text"))
    flags = {row[0]: FlagInfo(*row) for row in rows}
    jita_prices = dict(_rows(data_dir, "jita_prices", ("type_id", "price")))
    fixed_prices = dict(_rows(data_dir, "fixed_prices", ("type_id", "price")))
    return StaticData(
        types=types,
        groups=groups,
        categories=categories,
        systems=systems,
        constellations=constellations,
        regions=regions,
        factions=factions,
        npc_corporations=npc_corporations,
        flags=flags,
        jita_prices=jita_prices,
        fixed_prices=fixed_prices,
        type_translations=type_translations,
    )
