"""Entity figures through the real app, checked against what the raw ESI killmails say."""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import AUTH, Client, settle, until

from killboard.entities import backlog, figures
from killboard.ingest.pipeline import build_kill
from killboard.kill.enrich import enrich
from killboard.kill.prices import price_book
from killboard.kill.staticdata import StaticData
from killboard.kill.validate import parse_submission
from killboard.storage import schema
from killboard.storage.figures_schema import FIGURES_BACKLOG
from killboard.storage.participants import Kind
from killboard.storage.schema import INDEX_BACKLOG
from killboard.storage.store import Store
from killboard.web.keys import store_key

PLAYER_FIELDS = ("character_id", "corporation_id", "alliance_id")


async def post_all(client: Client, killmails: list[dict[str, Any]]) -> None:
    resp = await client.post("/api/killmails", json=killmails, headers=AUTH)
    assert resp.status == 202, await resp.text()
    await settle(client)


def values(client: Client) -> dict[int, float]:
    db = sqlite3.connect(client.server.app[store_key].path)
    try:
        return dict(db.execute("SELECT killmail_id, total_value FROM kills"))
    finally:
        db.close()


def expected(killmails: list[dict[str, Any]], field: str, entity: int, value: dict[int, float]) -> dict[str, int]:
    """Kills and losses of one entity as the raw ESI data says: once per kill, however many pilots."""
    kills = [k for k in killmails if any(a.get(field) == entity for a in k["attackers"])]
    losses = [k for k in killmails if k["victim"].get(field) == entity]
    return {
        "kills": len(kills),
        "losses": len(losses),
        "isk_destroyed": sum(round(value[k["killmail_id"]]) for k in kills),
        "isk_lost": sum(round(value[k["killmail_id"]]) for k in losses),
    }


def busiest(killmails: list[dict[str, Any]], field: str) -> int:
    """The id of `field` that appears in the most kills (on either side)."""
    seen: Counter[int] = Counter()
    for k in killmails:
        ids = {a.get(field) for a in k["attackers"]} | {k["victim"].get(field)}
        seen.update(i for i in ids if i)
    return seen.most_common(1)[0][0]


def tables(path: Path) -> tuple[list[Any], list[Any]]:
    db = sqlite3.connect(path)
    try:
        return (
            db.execute("SELECT * FROM entity_months ORDER BY 1, 2, 3").fetchall(),
            db.execute("SELECT * FROM entity_tops ORDER BY 1, 2, 3, 4").fetchall(),
        )
    finally:
        db.close()


@pytest.mark.parametrize(
    ("kind", "field"),
    [
        ("character", "character_id"),
        ("corporation", "corporation_id"),
        ("alliance", "alliance_id"),
        ("ship", "ship_type_id"),
    ],
)
async def test_counts_match_the_raw_esi_data(
    client: Client, killmails: list[dict[str, Any]], kind: str, field: str
) -> None:
    await post_all(client, killmails)
    value = values(client)
    entity = busiest(killmails, field)
    resp = await client.get(f"/api/{kind}/{entity}")
    assert resp.status == 200, await resp.text()
    got = await resp.json()
    want = expected(killmails, field, entity, value)
    assert {k: got[k] for k in want} == want
    assert got["channel"] == f"{kind}:{entity}"
    assert sum(m["kills"] for m in got["months"]) <= got["kills"]  # the bundled kills are years old


async def test_every_player_entity_counts_right(client: Client, killmails: list[dict[str, Any]]) -> None:
    """Not just the busiest: every character, corporation and alliance of the 82 kills."""
    await post_all(client, killmails)
    value = values(client)
    checked = 0
    for kind, field in zip(("character", "corporation", "alliance"), PLAYER_FIELDS, strict=True):
        ids = {p.get(field) for k in killmails for p in (k["victim"], *k["attackers"])} - {None, 0}
        for entity in sorted(ids)[:40]:
            got = await (await client.get(f"/api/{kind}/{entity}")).json()
            want = expected(killmails, field, entity, value)
            assert {k: got[k] for k in want} == want, (kind, entity)
            checked += 1
    assert checked > 60


def expected_tops(kills: list[dict[str, Any]]) -> Counter[tuple[int, int, int, int]]:
    """entity_tops as the enriched kills say, counted plainly: per kill, every entity once."""
    kinds = {1: "character_id", 2: "corporation_id", 3: "alliance_id", 5: "ship_id", 6: "ship_group_id"}
    want: Counter[tuple[int, int, int, int]] = Counter()
    for kill in kills:
        victim, attackers = kill["victim"], kill["attackers"]
        final = next((a for a in attackers if a["final_blow"]), attackers[0] if attackers else {})
        flew: dict[tuple[int, int], set[int]] = {}
        for a in attackers:
            for kind, field in kinds.items():
                if a.get(field):
                    flew.setdefault((kind, a[field]), set()).add(a.get("ship_id") or 0)
        lost = {(kind, victim[field]) for kind, field in kinds.items() if victim.get(field)}
        for kind, entity in flew.keys() | lost:
            field = kinds[kind]
            want[(kind, entity, figures.SYSTEM, kill["system_id"])] += 1
            if (kind, entity) in flew:
                if kind != Kind.SHIP:
                    want.update((kind, entity, figures.FLOWN, s) for s in flew[(kind, entity)] if s)
                if victim.get(field):
                    want[(kind, entity, figures.OPPONENT, victim[field])] += 1
            if (kind, entity) in lost:
                if kind != Kind.SHIP:
                    want[(kind, entity, figures.LOST, victim["ship_id"])] += 1
                if final.get(field):
                    want[(kind, entity, figures.OPPONENT, final[field])] += 1
        for place in ((Kind.SYSTEM, kill["system_id"]), (Kind.REGION, kill["region_id"])):
            want[(*place, figures.LOST, victim["ship_id"])] += 1
            if final.get("alliance_id"):
                want[(*place, figures.OPPONENT, final["alliance_id"])] += 1
    return want


async def test_every_top_list_row_matches_the_kills(client: Client, killmails: list[dict[str, Any]]) -> None:
    """Ships flown and lost, systems and opponents of every entity: the whole entity_tops table."""
    await post_all(client, killmails)
    kills = (await (await client.get("/api/killmails?limit=500")).json())["killmails"]
    assert len(kills) == len(killmails)
    db = sqlite3.connect(client.server.app[store_key].path)
    try:
        got = Counter(
            {tuple(row[:4]): row[4] for row in db.execute("SELECT kind, id, what, other, n FROM entity_tops")}
        )
    finally:
        db.close()
    want = expected_tops(kills)
    assert {what for _, _, what, _ in want} == {figures.FLOWN, figures.LOST, figures.SYSTEM, figures.OPPONENT}
    assert got == want


async def test_a_system_counts_the_kills_in_it(client: Client, killmails: list[dict[str, Any]]) -> None:
    await post_all(client, killmails)
    system = Counter(k["solar_system_id"] for k in killmails).most_common(1)[0][0]
    got = await (await client.get(f"/api/system/{system}")).json()
    assert got["kills"] == sum(1 for k in killmails if k["solar_system_id"] == system)
    assert got["losses"] == 0 and got["name"]


async def test_solo_kills_match_the_enriched_flag(client: Client, killmails: list[dict[str, Any]]) -> None:
    await post_all(client, killmails)
    body = await (await client.get("/api/killmails?limit=500")).json()
    solo = Counter()
    for kill in body["killmails"]:
        if kill["is_solo"]:
            for a in kill["attackers"]:
                if a.get("character_id"):
                    solo[a["character_id"]] += 1
    assert solo, "the real kills include solo kills"
    for character, n in list(solo.items())[:10]:
        got = await (await client.get(f"/api/character/{character}")).json()
        assert got["solo_kills"] == n


async def test_retention_takes_back_exactly_what_was_added(client: Client, killmails: list[dict[str, Any]]) -> None:
    store = client.server.app[store_key]
    await post_all(client, killmails[:40])
    before = tables(store.path)
    await post_all(client, killmails[40:])
    kill_times = sorted(k["killmail_time"] for k in killmails[40:])
    assert kill_times
    # Prune everything, then store the first 40 again: the figures are those of the first 40.
    while await store.prune(2**40, 500):
        pass
    assert tables(store.path) == ([], [])
    await post_all(client, killmails[:40])  # stored again with new seqs
    assert tables(store.path) == before


async def test_rebuild_gives_the_figures_kept_incrementally(
    client: Client, static: StaticData, killmails: list[dict[str, Any]]
) -> None:
    await post_all(client, killmails)
    store = client.server.app[store_key]
    kept = tables(store.path)
    assert kept[0] and kept[1]
    assert await backlog.rebuild(store, static, batch=7) == len(killmails)
    assert tables(store.path) == kept


async def test_kills_stored_before_the_figures_are_counted_in_after_the_upgrade(
    tmp_path: Path, static: StaticData, killmails: list[dict[str, Any]], make_client: Any, monkeypatch: Any
) -> None:
    # A database of schema 7 (the participant index and battles, no figures).
    path = tmp_path / "kb.sqlite3"
    client = await make_client()
    await post_all(client, killmails)
    want = tables(path)
    await client.close()
    db = sqlite3.connect(path)
    db.executescript("DROP TABLE entity_months; DROP TABLE entity_tops; PRAGMA user_version = 7;")
    db.close()
    client = await make_client()  # migrates to 8: the figures' backlog counts every kill in once
    store = client.server.app[store_key]

    async def done() -> bool:
        return not int(await store.get_state(INDEX_BACKLOG) or 0) and await store.get_state(FIGURES_BACKLOG) is None

    await until(done)
    assert tables(path) == want
    corp = busiest(killmails, "corporation_id")
    body = await (await client.get(f"/api/corporation/{corp}/kills?limit=200")).json()
    assert len(body["kills"]) == sum(
        1 for k in killmails if corp in {p.get("corporation_id") for p in (k["victim"], *k["attackers"])}
    )


async def test_kills_not_yet_in_the_participant_index_are_counted_once(
    tmp_path: Path, static: StaticData, killmails: list[dict[str, Any]]
) -> None:
    """Schema 5 to 8 at once: the participant backlog indexes old kills and calls the figures' writer;
    the figures' own backlog must not count them a second time."""
    path = tmp_path / "kb.sqlite3"
    store = await Store.open(path)
    backlog.attach(store, static)
    from killgen import as_schema_5, make_kills, save_all

    await save_all(store, make_kills(static, killmails, 200, 700_000_000, 1_700_000_000))
    want = tables(path)
    await store.close()
    as_schema_5(path)
    store = await Store.open(path)
    try:
        backlog.attach(store, static)
        assert await backlog.catch_up(store, static) == 0  # nothing indexed yet: nothing of its own to do
        assert await store.index_backlog(batch=30) == 200
        assert await backlog.catch_up(store, static) == 0
    finally:
        await store.close()
    assert tables(path) == want
    assert len(schema.MIGRATIONS) == 9


async def test_shares_worked_out_before_the_write_count_like_the_write_itself(
    tmp_path: Path, static: StaticData, killmails: list[dict[str, Any]]
) -> None:
    """The pipeline works each kill's share out while preparing it (Store.preparers): the
    figures are those the writer gives when it works them out itself."""
    book = price_book(static)
    kept = []
    for name, early in (("plain", False), ("prepared", True)):
        store = await Store.open(tmp_path / f"{name}.sqlite3")
        backlog.attach(store, static)
        try:
            kills = [build_kill(sub, enrich(sub, static, {}, book)) for sub in map(parse_submission, killmails)]
            for kill in kills if early else ():
                for prepare in store.preparers:
                    prepare(kill)
            assert all((backlog.PREPARED in k.prepared) == early for k in kills)
            await store.save_kills(kills[:50])
            await store.save_kills(kills[30:])  # 20 of them again: stored once, counted once
        finally:
            await store.close()
        kept.append(tables(tmp_path / f"{name}.sqlite3"))
    assert kept[0][0] and kept[0][1]
    assert kept[0] == kept[1]


def month_row(year: int, month: int, kills: int) -> tuple[int, int, int, int, int, int]:
    return (year * 12 + month - 1, kills, 0, 0, 0, 0)


@pytest.mark.parametrize(
    ("rows", "first", "last"),
    [
        ([], "2025-01", "2025-12"),  # nothing at all: the last 12 months
        ([month_row(2025, 3, 2), month_row(2021, 11, 5)], "2025-01", "2025-12"),  # active this year
        ([month_row(2021, 11, 5), month_row(2021, 2, 1)], "2020-12", "2021-11"),  # quiet since 2021-11
        ([month_row(2024, 1, 4)], "2023-02", "2024-01"),  # 23 months ago: its year up to then
        ([month_row(2026, 6, 1)], "2025-01", "2025-12"),  # a kill dated ahead of the clock: not an end
    ],
)
def test_the_months_shown_end_now_or_at_the_last_active_month(rows: list[Any], first: str, last: str) -> None:
    now = 1_765_000_000  # 2025-12-06 UTC
    got = figures.figures(rows, [], now)
    assert [got.months[0]["month"], got.months[-1]["month"]] == [first, last]
    assert len(got.months) == 12
    shown = {m["month"]: m["kills"] for m in got.months}
    for m, kills, *_ in rows:  # every row inside the window is shown as it is
        label = f"{m // 12:04d}-{m % 12 + 1:02d}"
        if first <= label <= last:
            assert shown[label] == kills
    assert got.kills == sum(r[1] for r in rows)  # the totals are all-time whatever is shown


async def test_a_page_of_an_entity_quiet_for_a_year_shows_its_last_active_year(
    client: Client, killmails: list[dict[str, Any]]
) -> None:
    await post_all(client, killmails)
    # The alliance in most of the bundled kills among those with none in the last 13 months.
    year_ago = time.strftime("%Y-%m", time.gmtime(time.time() - 400 * 86400))
    months: dict[int, set[str]] = {}
    for k in killmails:
        for a in [k["victim"], *k["attackers"]]:
            if a.get("alliance_id"):
                months.setdefault(a["alliance_id"], set()).add(k["killmail_time"][:7])
    quiet = [a for a, seen in months.items() if max(seen) < year_ago]
    entity = max(
        quiet, key=lambda a: sum(a in {x.get("alliance_id") for x in [k["victim"], *k["attackers"]]} for k in killmails)
    )
    killed = Counter(
        k["killmail_time"][:7] for k in killmails if any(a.get("alliance_id") == entity for a in k["attackers"])
    )
    lost = Counter(k["killmail_time"][:7] for k in killmails if k["victim"].get("alliance_id") == entity)
    last = max(killed | lost)
    assert sum(killed.values()) + sum(lost.values()) >= 2
    got = await (await client.get(f"/api/alliance/{entity}")).json()
    assert got["months"][-1]["month"] == last
    assert [(m["kills"], m["losses"]) for m in got["months"]] == [
        (killed[m["month"]], lost[m["month"]]) for m in got["months"]
    ]
    page = await (await client.get(f"/alliance/{entity}")).text()
    assert f"12 months to {last}" in page and "Last 12 months" not in page
