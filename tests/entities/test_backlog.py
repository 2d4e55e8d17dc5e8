"""Kills indexed while enrichment put an attacker's weapon in as their ship when ESI gave none
(killboard/entities/backlog.py `reindex`): after the upgrade they are indexed again from their
stored documents, and the index and the figures are what storing them today gives."""

from __future__ import annotations

import importlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from battlefights import fight
from conftest import Client, until
from test_entity_figures import tables

from killboard.entities import backlog
from killboard.ingest.pipeline import build_kill
from killboard.kill.enrich import HULL_CATEGORIES, enrich
from killboard.kill.prices import price_book
from killboard.kill.staticdata import StaticData
from killboard.kill.validate import parse_submission
from killboard.storage import participants
from killboard.storage.rows import NewKill
from killboard.storage.schema import REINDEX_THROUGH
from killboard.storage.store import Store
from killboard.web.keys import store_key

FIGHT = "30001155"  # 163 real kills; in 10 of them ESI gives 12 pilots a gun and no ship


class _Every:
    """Every category: enrichment before the fix, where any weapon stood in for a missing ship."""

    def __contains__(self, _: object) -> bool:
        return True


def as_stored(static: StaticData, killmails: list[dict[str, Any]]) -> list[NewKill]:
    book = price_book(static)
    return [build_kill(sub, enrich(sub, static, {}, book)) for sub in map(parse_submission, killmails)]


def as_stored_before_the_fix(
    static: StaticData, killmails: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> list[NewKill]:
    with monkeypatch.context() as patch:
        patch.setattr(importlib.import_module("killboard.kill.enrich"), "HULL_CATEGORIES", _Every())
        return as_stored(static, killmails)


async def store_all(path: Path, static: StaticData, kills: list[NewKill]) -> None:
    store = await Store.open(path)
    backlog.attach(store, static)
    try:
        for i in range(0, len(kills), 50):
            await store.save_kills(kills[i : i + 50])
    finally:
        await store.close()


def index(path: Path) -> tuple[list[Any], ...]:
    """The participant index and the figures, as rows (a block's entries in any order: readers sort them)."""
    db = sqlite3.connect(path)
    try:
        pilots = [(seq, participants.unpack(blob)) for seq, blob in db.execute("SELECT * FROM participants ORDER BY 1")]
        postings = sorted(participants.rows(db.execute("SELECT * FROM entity_kills")))
    finally:
        db.close()
    return (pilots, postings, *tables(path))


def ships_indexed(path: Path) -> set[int]:
    db = sqlite3.connect(path)
    try:
        return {
            i for (i,) in db.execute("SELECT DISTINCT id FROM entity_kills WHERE kind = ?", (participants.Kind.SHIP,))
        }
    finally:
        db.close()


def as_schema_8(path: Path) -> None:
    """Take a database back to the release before migration 9 (nothing noted to look over)."""
    db = sqlite3.connect(path)
    db.execute("DELETE FROM state WHERE key = ?", (REINDEX_THROUGH,))
    db.execute("PRAGMA user_version = 8")
    db.commit()
    db.close()


async def test_kills_that_named_a_weapon_as_a_ship_are_indexed_again(
    tmp_path: Path, static: StaticData, monkeypatch: pytest.MonkeyPatch
) -> None:
    kills = fight(FIGHT)
    today, old = tmp_path / "today.sqlite3", tmp_path / "old.sqlite3"
    await store_all(today, static, as_stored(static, kills))
    await store_all(old, static, as_stored_before_the_fix(static, kills, monkeypatch))
    guns = ships_indexed(old) - ships_indexed(today)
    # Modules, charges, drones: indexed as ships.
    assert guns and not any(static.types[g].category_id in HULL_CATEGORIES for g in guns)
    assert index(old) != index(today)
    as_schema_8(old)

    store = await Store.open(old)  # migration 9 notes every indexed kill to be looked over
    backlog.attach(store, static)
    try:
        assert int(await store.get_state(REINDEX_THROUGH) or 0) == len(kills)
        changed: list[int] = []
        store.on_changed.append(changed.extend)
        assert await backlog.reindex(store, static, batch=17) == 10
        assert len(changed) == 10  # kept pages and battle summaries of those kills are told
        assert await store.get_state(REINDEX_THROUGH) is None
        assert await backlog.reindex(store, static) == 0  # done once
    finally:
        await store.close()
    assert index(old) == index(today)


async def test_the_server_indexes_them_again_at_start(
    tmp_path: Path, static: StaticData, monkeypatch: pytest.MonkeyPatch, make_client: Any
) -> None:
    kills = fight(FIGHT)
    path = tmp_path / "kb.sqlite3"  # make_client's database
    await store_all(path, static, as_stored_before_the_fix(static, kills, monkeypatch))
    [gun, *_] = sorted(ships_indexed(path) - {k["victim"]["ship_type_id"] for k in kills} - _hulls(kills))
    as_schema_8(path)
    client: Client = await make_client()
    store = client.server.app[store_key]

    async def done() -> bool:
        return await store.get_state(REINDEX_THROUGH) is None

    await until(done)
    assert gun not in ships_indexed(path)
    # No stored kill names it as a ship any more: neither its figures nor its list of kills.
    figures = await (await client.get(f"/api/ship/{gun}")).json()
    assert (figures["kills"], figures["top"]["ships_flown"]) == (0, [])
    assert (await (await client.get(f"/api/ship/{gun}/kills")).json())["kills"] == []


def _hulls(kills: list[dict[str, Any]]) -> set[int]:
    return {a["ship_type_id"] for k in kills for a in k["attackers"] if a.get("ship_type_id")}
