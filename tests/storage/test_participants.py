"""The participant index: written with each kill, checked against what the raw ESI data says."""

from __future__ import annotations

import importlib.util
import sqlite3
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

from conftest import AUTH, Client, settle
from killgen import as_schema_5, make_kills, save_all

from killboard.kill.enrich import HULL_CATEGORIES
from killboard.kill.staticdata import StaticData
from killboard.storage import participants
from killboard.storage.participants import Kind
from killboard.storage.schema import MIGRATIONS
from killboard.storage.store import Store
from killboard.web.keys import store_key


def expected_pilots(esi: dict[str, Any], static: StaticData) -> list[tuple[int, ...]]:
    """The rows the index must hold for a raw ESI killmail: the victim, then every attacker."""

    def row(who: dict[str, Any], damage: int, final: bool) -> tuple[int, ...]:
        ids = [who.get(k) or 0 for k in ("character_id", "corporation_id", "alliance_id", "faction_id")]
        npc = static.npc_corporations.get(ids[1])
        if not ids[3] and npc is not None:
            ids[3] = npc.faction_id or 0  # an NPC corporation fights for its faction
        # As the kill page shows it: with no ship, a weapon that is a hull (an NPC, a structure)
        # stands in; a module (a pilot whose ship ESI left out) does not.
        ship = who.get("ship_type_id") or 0
        weapon = static.types.get(who.get("weapon_type_id") or 0)
        if not ship and weapon is not None and weapon.category_id in HULL_CATEGORIES:
            ship = who["weapon_type_id"]
        return (*ids, ship, damage, int(final))

    victim = esi["victim"]
    return [row(victim, victim.get("damage_taken", 0), False)] + [
        row(a, a.get("damage_done", 0), a.get("final_blow", False)) for a in esi["attackers"]
    ]


BLOCKS = "SELECT kind, id, block, seqs FROM entity_kills"


async def post_all(client: Client, killmails: list[dict[str, Any]]) -> None:
    resp = await client.post("/api/killmails", json=killmails, headers=AUTH)
    assert resp.status in (200, 202), await resp.text()
    await settle(client)


def db_of(client: Client) -> sqlite3.Connection:
    return sqlite3.connect(client.server.app[store_key].path)


async def test_every_pilot_of_every_real_kill_is_indexed(
    client: Client, static: StaticData, killmails: list[dict[str, Any]]
) -> None:
    await post_all(client, killmails)
    db = db_of(client)
    seq_of = dict(db.execute("SELECT killmail_id, seq FROM kills"))
    blobs = dict(db.execute("SELECT seq, pilots FROM participants"))
    assert len(blobs) == len(killmails)
    for esi in killmails:
        assert participants.unpack(blobs[seq_of[esi["killmail_id"]]]) == expected_pilots(esi, static)


async def test_an_entity_counts_once_a_kill_on_each_side(client: Client, killmails: list[dict[str, Any]]) -> None:
    await post_all(client, killmails)
    db = db_of(client)
    seq_of = dict(db.execute("SELECT killmail_id, seq FROM kills"))
    roles = {(k, i, s): r for k, i, s, r in participants.rows(db.execute(BLOCKS))}
    kills: Counter[int] = Counter()
    losses: Counter[int] = Counter()
    for esi in killmails:
        seq = seq_of[esi["killmail_id"]]
        corp = esi["victim"]["corporation_id"]
        assert participants.is_loss(roles[(Kind.CORPORATION, corp, seq)])
        losses[corp] += 1
        attacking = {a["corporation_id"] for a in esi["attackers"] if a.get("corporation_id")}
        for c in attacking:
            assert participants.is_kill(roles[(Kind.CORPORATION, c, seq)])
            kills[c] += 1
        final = next(a for a in esi["attackers"] if a.get("final_blow"))
        if final.get("character_id"):
            assert participants.final_blow(roles[(Kind.CHARACTER, final["character_id"], seq)])
        assert roles[(Kind.SYSTEM, esi["solar_system_id"], seq)] == 0
        assert (Kind.SHIP, esi["victim"]["ship_type_id"], seq) in roles
    # The per-entity lists agree with counting the raw data.
    for corp in list(kills)[:20]:
        rows = await participants.kills_of(client.server.app[store_key]._reader, Kind.CORPORATION, corp, limit=1000)
        assert sum(participants.is_kill(r) for _, r in rows) == kills[corp]
        assert sum(participants.is_loss(r) for _, r in rows) == losses[corp]
        assert [s for s, _ in rows] == sorted((s for s, _ in rows), reverse=True)


async def test_posting_the_same_kills_again_changes_nothing(client: Client, killmails: list[dict[str, Any]]) -> None:
    await post_all(client, killmails)
    db = db_of(client)
    before = sorted(participants.rows(db.execute(BLOCKS)))
    await post_all(client, killmails)
    assert sorted(participants.rows(db.execute(BLOCKS))) == before
    assert db.execute("SELECT count(*) FROM participants").fetchone()[0] == len(killmails)


async def test_retention_takes_the_index_rows_with_the_kills(
    tmp_path: Path, static: StaticData, killmails: list[dict[str, Any]]
) -> None:
    store = await Store.open(tmp_path / "kb.sqlite3")
    try:
        await save_all(store, make_kills(static, killmails, 100, 900_000_000, 1_000_000))  # kill times near 1970
        await save_all(store, make_kills(static, killmails, 40, 950_000_000, 2_000_000_000))
        assert await store.prune(older_than=1_500_000_000, batch=1000) == 100
    finally:
        await store.close()
    db = sqlite3.connect(tmp_path / "kb.sqlite3")
    kept = {s for (s,) in db.execute("SELECT seq FROM kills")}
    assert len(kept) == 40
    assert {s for (s,) in db.execute("SELECT seq FROM participants")} == kept
    assert {s for _, _, s, _ in participants.rows(db.execute(BLOCKS))} == kept


async def test_kills_stored_before_the_index_are_indexed_after_the_upgrade(
    tmp_path: Path, static: StaticData, killmails: list[dict[str, Any]]
) -> None:
    path = tmp_path / "old.sqlite3"
    store = await Store.open(path)
    await save_all(store, make_kills(static, killmails, 450, 700_000_000, 1_700_000_000))
    await store.close()
    # Back to schema 5, as a database written by the previous release.
    as_schema_5(path)
    store = await Store.open(path)
    try:
        assert await store.get_state("participants.backlog_through_seq") == "450"
        assert await store.index_backlog(batch=200) == 450
        assert await store.index_backlog() == 0  # done: nothing left, and nothing indexed twice
    finally:
        await store.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT count(*) FROM participants").fetchone()[0] == 450
    want = sum(1 + len(k["attackers"]) for k in (killmails * 6)[:450])
    got = sum(len(participants.unpack(b)) for (b,) in db.execute("SELECT pilots FROM participants"))
    assert got == want
    assert len(MIGRATIONS) == 9  # 7: battles, 8: entity figures, 9: the index looked over


def test_pack_round_trips_big_ids_and_none() -> None:
    pilots = [(2_123_456_789, 98_000_001, 99_000_002, 0, 670, 0, 0), (0, 1_000_125, 0, 500_001, 2**40, 123_456, 1)]
    assert participants.unpack(participants.pack(pilots)) == pilots
    assert participants.unpack(participants.pack([])) == []


def test_packed_rows_are_plain_raw_deflate_both_ways() -> None:
    """Rows packed by an older release (stdlib zlib 9) read back, and new rows (isal when
    installed) are raw deflate that stdlib zlib inflates: a database moves freely between them."""
    pilots = [
        (2_100_000_000 + i, 98_000_000 + i % 7, 99_000_000 + i % 2, 0, 587 + i % 3, i * 10, int(i == 4))
        for i in range(40)
    ]
    blob = participants.pack(pilots)
    old = zlib.compressobj(9, zlib.DEFLATED, -15)
    old_blob = old.compress(zlib.decompress(blob, -15)) + old.flush()
    assert participants.unpack(old_blob) == pilots
    assert zlib.decompressobj(-15).decompress(blob) == zlib.decompress(old_blob, -15)
    assert len(blob) < len(zlib.decompress(blob, -15)) // 2  # it does compress
    if importlib.util.find_spec("isal") is not None:  # installed where requirements.txt says
        assert participants._deflate is not zlib and blob != old_blob


def test_posting_blocks_round_trip_every_role_and_block_edge() -> None:
    kills = []
    for seq in (1, 255, 256, 257, 1023, 1024, 16383, 16384, 2**40 + 5):
        entities = tuple((int(kind), 1000 + seq % 3, seq % 5) for kind in participants.SHIFT)
        kills.append((seq, participants.Participation((), entities)))
    written = participants.postings(kills)
    got = sorted(participants.rows(written))
    want = sorted((kind, i, seq, role) for seq, part in kills for kind, i, role in part.entities)
    assert got == want


async def test_kills_of_pages_exactly_across_blocks(
    tmp_path: Path, static: StaticData, killmails: list[dict[str, Any]]
) -> None:
    store = await Store.open(tmp_path / "kb.sqlite3")
    try:
        await save_all(store, make_kills(static, killmails, 1500, 600_000_000, 1_700_000_000))
        db = sqlite3.connect(store.path)
        every = list(participants.rows(db.execute(BLOCKS)))
        db.close()
        for kind in (Kind.REGION, Kind.GROUP, Kind.CORPORATION):
            entity = Counter(i for k, i, _, _ in every if k == kind).most_common(1)[0][0]
            want = sorted(((s, r) for k, i, s, r in every if (k, i) == (kind, entity)), reverse=True)
            assert len(want) > 100  # regions and groups span several blocks here
            got: list[tuple[int, int]] = []
            before = None
            while page := await store.kills_of(kind, entity, before, 7):
                got += page
                before = page[-1][0]
            assert got == want
    finally:
        await store.close()
