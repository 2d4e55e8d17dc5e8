"""Who took part in which kill: the participant index that battles and entity pages both read.

Two tables, written in the kill's own transaction (`Store.save_kills`), so no kill is ever stored
without them, and pruned with it:

- `participants`: a kill's pilots, one packed row a kill (keyed by its seq): the victim first,
  then its attackers in ESI order, each with character, corporation, alliance, faction, ship,
  damage (taken by the victim, done by an attacker) and the final blow. Battles read it to put
  pilots on sides and count the ships each side fielded. Packed (varints field by field, raw deflate:
  ~14 B a pilot) because a row a pilot cost ~35 B a pilot: 435 B a kill, half of the kill itself.
- `entity_kills`: every entity of a kill once (characters, corporations and alliances on either
  side, ships and ship groups flown or lost, the system and the region), with its role (a code,
  see ROLES), kept as posting lists: a row per entity and block of seqs (`seq >> SHIFT[kind]`)
  holding the block's (seq, role) entries as varints. A row a kill and entity cost ~16 B (key,
  header, cell): the kill's ~31 entities were half the store; an entry in a block is 2-3 B. The
  block sizes keep a busy entity's row well under a page (a region in every kill: 256 entries of
  2 B), so appending never rewrites overflow pages. Entity pages read an entity's kills and
  losses from it newest first (`kills_of`).

A kill counts once for each entity however many of its pilots shared it (issue 20's rule).
"""

from __future__ import annotations

import sqlite3
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from types import ModuleType
from typing import Any

import aiosqlite

from .sqlite import insert_many

# isal deflates a kill's pilot rows at ~0.5x the CPU of stdlib zlib 9 for ~2% more bytes, and a
# 10,000-pilot row at ~0.02x (bench/compress.py); the output is plain raw deflate, so rows packed
# by either read back with stdlib zlib. stdlib zlib 9 stays the fallback.
_deflate: ModuleType
try:
    from isal import isal_zlib as _deflate
except ImportError:
    _deflate = zlib
PACK_LEVEL = 1 if _deflate is not zlib else 9

# The tables (migration 6 in store.py). WITHOUT ROWID: the primary key is the row, so each
# row costs its key and columns once, and a small integer (0, 1) takes no payload byte.
PILOTS_SCHEMA = """
CREATE TABLE participants (
    seq INTEGER PRIMARY KEY,      -- kills.seq
    pilots BLOB NOT NULL          -- pack(): the victim, then the attackers
);
"""
ENTITY_KILLS_SCHEMA = """
CREATE TABLE entity_kills (
    kind INTEGER NOT NULL,        -- Kind
    id INTEGER NOT NULL,
    block INTEGER NOT NULL,       -- seq >> SHIFT[kind]
    seqs BLOB NOT NULL,           -- entries(): varints of (seq within the block) << 3 | role code
    PRIMARY KEY (kind, id, block)
) WITHOUT ROWID;
"""
SCHEMA = PILOTS_SCHEMA + ENTITY_KILLS_SCHEMA


class Kind(IntEnum):
    """What an id in `entity_kills` names (ids of different kinds overlap: type 587, group 25 …)."""

    CHARACTER = 1
    CORPORATION = 2
    ALLIANCE = 3
    SHIP = 5
    GROUP = 6
    SYSTEM = 7
    REGION = 9


KIND_NAMES: Mapping[str, Kind] = {k.name.lower(): k for k in Kind}

# Seqs a block of each kind spans (2**SHIFT): an entry takes 2 bytes up to a shift of 11, 3 up to
# 18. Busy kinds get small blocks (a region or ship group may be in most kills, the capsule in a
# quarter), rare ones large blocks so a pilot's few kills a day share a row. Written into the
# stored blocks: changing one needs a migration that indexes again.
SHIFT: Mapping[int, int] = {
    Kind.CHARACTER: 14,
    Kind.CORPORATION: 11,
    Kind.ALLIANCE: 10,
    Kind.SHIP: 10,
    Kind.GROUP: 9,
    Kind.SYSTEM: 11,
    Kind.REGION: 8,
}

# Roles as bits while a kill is worked out; stored as the small codes of ROLES.
LOSS = 1  # the entity was the victim's (its character, corporation, ship …)
KILL = 2  # among the attackers
FINAL_BLOW = 4  # one of its pilots dealt the final blow
# Stored code -> bits, and back. 0 (the commonest, and the place of a kill) is stored in no byte.
ROLES = (KILL, LOSS, KILL | FINAL_BLOW, LOSS | KILL, LOSS | KILL | FINAL_BLOW)
_CODES = {bits: code for code, bits in enumerate(ROLES)}
_CODES[0] = 0  # a place (system, region): the kill happened there


def is_loss(code: int) -> bool:
    return bool(ROLES[code] & LOSS)


def is_kill(code: int) -> bool:
    return bool(ROLES[code] & KILL)


def final_blow(code: int) -> bool:
    return bool(ROLES[code] & FINAL_BLOW)


# What each pilot brings to entity_kills, in order: the participant's field and its kind.
_PILOT_ENTITIES = (
    ("character_id", Kind.CHARACTER),
    ("corporation_id", Kind.CORPORATION),
    ("alliance_id", Kind.ALLIANCE),
    ("ship_id", Kind.SHIP),
    ("ship_group_id", Kind.GROUP),
)
_PLACES = (("system_id", Kind.SYSTEM), ("region_id", Kind.REGION))

# (character, corporation, alliance, faction, ship type, damage, final blow); 0 where none.
PilotRow = tuple[int, int, int, int, int, int, int]
_FIELDS = 7
EntityRow = tuple[int, int, int]  # (kind, id, role)


@dataclass(frozen=True, slots=True)
class Participation:
    """One kill's rows for both tables, computed from the enriched kill before its transaction."""

    pilots: tuple[PilotRow, ...]  # the victim first, then the attackers
    entities: tuple[EntityRow, ...]  # (kind, id, role code)
    # pack(pilots), made with the rest before the write when asked (participation(packed=True));
    # empty: the write packs them (zlib there let go of the GIL and waited to get it back).
    packed: bytes = b""


def _id(value: Any) -> int:
    return value if isinstance(value, int) and 0 < value < 2**63 else 0


def participation(kill: Mapping[str, Any], packed: bool = False) -> Participation:
    """The participant rows and entity roles of an enriched kill (killboard/kill/enrich.py);
    with `packed`, the pilots' stored bytes too."""
    victim = kill.get("victim") or {}
    attackers: Sequence[Mapping[str, Any]] = kill.get("attackers") or ()
    pilots: list[PilotRow] = [_pilot(victim, victim.get("damage_taken"), False)]
    roles: dict[tuple[int, int], int] = {}
    _add(roles, victim, LOSS)
    for attacker in attackers:
        final = bool(attacker.get("final_blow"))
        pilots.append(_pilot(attacker, attacker.get("damage_done"), final))
        _add(roles, attacker, KILL | (FINAL_BLOW if final else 0))
    for field, kind in _PLACES:
        place = _id(kill.get(field))
        if place:
            roles[(kind, place)] = 0
    entities = tuple((kind, i, _CODES[role]) for (kind, i), role in roles.items())
    return Participation(tuple(pilots), entities, pack(pilots) if packed else b"")


def _pilot(who: Mapping[str, Any], damage: Any, final: bool) -> PilotRow:
    return (
        _id(who.get("character_id")),
        _id(who.get("corporation_id")),
        _id(who.get("alliance_id")),
        _id(who.get("faction_id")),
        _id(who.get("ship_id")),
        _id(damage),
        int(final),
    )


def _add(roles: dict[tuple[int, int], int], who: Mapping[str, Any], role: int) -> None:
    for field, kind in _PILOT_ENTITIES:
        entity = _id(who.get(field))
        if entity:
            key = (kind, entity)
            roles[key] = roles.get(key, 0) | role


def pack(pilots: Sequence[PilotRow]) -> bytes:
    """Pilots as LEB128 varints, raw-deflated: repeated corporations and alliances fold away."""
    out = bytearray()
    # Field by field (every character, then every corporation …): equal ids stand together.
    for field in range(_FIELDS):
        for pilot in pilots:
            _varint(pilot[field], out)
    # One-shot: a compressobj's setup is most of the cost on ~240 bytes (and isal's stream mode
    # gives ~6% more bytes on them).
    return _deflate.compress(out, PACK_LEVEL, -15)


def unpack(blob: bytes) -> list[PilotRow]:
    """The pilots of pack(), the victim first."""
    values = _varints(zlib.decompress(blob, -15))
    count = len(values) // _FIELDS
    # A pilot from each field's column: zip makes the tuples in C (0.73x the time of a tuple per
    # pilot built from a generator; battles unpack every kill's pilots as kills arrive).
    columns = [values[f * count : (f + 1) * count] for f in range(_FIELDS)]
    return list(zip(*columns, strict=True))


INSERT_PILOTS = "INSERT INTO participants (seq, pilots) VALUES (?, ?) ON CONFLICT DO NOTHING"
# Appends to the block's entries (|| makes TEXT of two BLOBs, bytes kept, NULs too: cast back).
INSERT_ENTITIES = (
    "INSERT INTO entity_kills (kind, id, block, seqs) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (kind, id, block) DO UPDATE SET seqs = CAST(seqs || excluded.seqs AS BLOB)"
)
DELETE_PILOTS = "DELETE FROM participants WHERE seq = ?"


def _varint(value: int, out: bytearray) -> None:
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _varints(data: bytes) -> list[int]:
    values: list[int] = []
    value = shift = 0
    for byte in data:
        value |= (byte & 0x7F) << shift
        if byte & 0x80:
            shift += 7
        else:
            values.append(value)
            value = shift = 0
    return values


BlockKey = tuple[int, int, int]  # (kind, id, block)


def postings(kills: Sequence[tuple[int, Participation]]) -> list[tuple[int, int, int, bytes]]:
    """The entity_kills rows to append for new kills: (kind, id, block, entries), one per block."""
    blocks: dict[BlockKey, bytearray] = {}
    for seq, part in kills:
        for kind, entity, role in part.entities:
            shift = SHIFT[kind]
            _varint(
                (seq & ((1 << shift) - 1)) << 3 | role, blocks.setdefault((kind, entity, seq >> shift), bytearray())
            )
    return [(*key, bytes(data)) for key, data in blocks.items()]


def entries(kind: int, block: int, data: bytes) -> list[tuple[int, int]]:
    """(seq, role code) of a block's entries, in the order they were written."""
    base = block << SHIFT[kind]
    return [(base + (v >> 3), v & 7) for v in _varints(data)]


def rows(blocks: Iterable[Sequence[Any]]) -> Iterator[tuple[int, int, int, int]]:
    """(kind, id, seq, role) of entity_kills rows (kind, id, block, seqs): a row a kill and entity."""
    for kind, entity, block, data in blocks:
        for seq, role in entries(kind, block, data):
            yield kind, entity, seq, role


def index(db: sqlite3.Connection, kills: Sequence[tuple[int, Participation]]) -> None:
    """Write the index rows of stored kills (in their transaction)."""
    insert_many(db, INSERT_PILOTS, [(seq, part.packed or pack(part.pilots)) for seq, part in kills])
    insert_many(db, INSERT_ENTITIES, postings(kills))


def unindex(db: sqlite3.Connection, kills: Sequence[tuple[int, Participation]]) -> None:
    """Take kills out of both tables (retention; indexing again), in the caller's transaction."""
    db.executemany(DELETE_PILOTS, [(seq,) for seq, _ in kills])
    remove(db, kills)


def remove(db: sqlite3.Connection, kills: Sequence[tuple[int, Participation]]) -> None:
    """Take kills out of their entities' blocks (retention), in the caller's transaction."""
    gone: dict[BlockKey, set[int]] = {}
    for seq, part in kills:
        for kind, entity, _ in part.entities:
            gone.setdefault((kind, entity, seq >> SHIFT[kind]), set()).add(seq)
    keys = list(gone)
    updates: list[tuple[bytes, int, int, int]] = []
    deletes: list[BlockKey] = []
    for i in range(0, len(keys), 300):
        chunk = keys[i : i + 300]
        marks = ",".join("(?, ?, ?)" for _ in chunk)
        sql = f"SELECT kind, id, block, seqs FROM entity_kills WHERE (kind, id, block) IN (VALUES {marks})"
        for kind, entity, block, data in db.execute(sql, [v for key in chunk for v in key]).fetchall():
            drop = gone[(kind, entity, block)]
            kept = [(s, r) for s, r in entries(kind, block, data) if s not in drop]
            if kept:
                out = bytearray()
                mask = (1 << SHIFT[kind]) - 1
                for s, r in kept:
                    _varint((s & mask) << 3 | r, out)
                updates.append((bytes(out), kind, entity, block))
            else:
                deletes.append((kind, entity, block))
    db.executemany("UPDATE entity_kills SET seqs = ? WHERE kind = ? AND id = ? AND block = ?", updates)
    db.executemany("DELETE FROM entity_kills WHERE kind = ? AND id = ? AND block = ?", deletes)


async def pilots(db: aiosqlite.Connection, seqs: Sequence[int]) -> dict[int, list[PilotRow]]:
    """The pilots of stored kills by seq (the victim first); kills not indexed are left out."""
    out: dict[int, list[PilotRow]] = {}
    for i in range(0, len(seqs), 500):
        chunk = list(seqs[i : i + 500])
        marks = ",".join("?" * len(chunk))
        async with db.execute(f"SELECT seq, pilots FROM participants WHERE seq IN ({marks})", chunk) as cur:
            out.update((seq, unpack(blob)) for seq, blob in await cur.fetchall())
    return out


async def kills_of(
    db: aiosqlite.Connection, kind: Kind, entity: int, before_seq: int | None = None, limit: int = 50
) -> list[tuple[int, int]]:
    """(seq, role code) of an entity's kills and losses, newest first, before `before_seq`."""
    before = before_seq if before_seq is not None else 2**63 - 1
    out: list[tuple[int, int]] = []
    async with db.execute(
        "SELECT block, seqs FROM entity_kills WHERE kind = ? AND id = ? AND block <= ? ORDER BY block DESC",
        (int(kind), entity, max(before - 1, 0) >> SHIFT[kind]),
    ) as cur:
        while len(out) < limit:
            found = await cur.fetchmany(16)
            if not found:
                break
            for block, data in found:
                out += sorted({e for e in entries(kind, block, data) if e[0] < before}, reverse=True)
    return out[:limit]
