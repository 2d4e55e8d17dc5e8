"""The match keys of recent kills (killboard/web/recent.py): a filtered page reads only what it shows,
and shows what a scan of the newest stored kills would."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp_jinja2
from conftest import Client, until
from killgen import make_kills, save_all

from killboard.kill.staticdata import StaticData
from killboard.storage.store import Store
from killboard.web import filters
from killboard.web.keys import recent_key, store_key
from killboard.web.pages import FILTER_SCAN, INITIAL_ROWS


def row_ids(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'<li class="kill[^"]*" data-id="(\d+)"', html)]


def count_renders(store: Store) -> Callable[[], int]:
    """Wrap the store's real renderer: how many stored kills were rendered since the last call."""
    from killboard.kill import codec

    real = store.render or codec.default_renderer()
    calls = [0]

    def counted(*args: Any) -> bytes:
        calls[0] += 1
        return real(*args)

    store.render = counted

    def taken() -> int:
        n, calls[0] = calls[0], 0
        return n

    return taken


async def brute_force(store: Store, query: dict[str, str]) -> list[int]:
    """What the page showed before: scan the newest FILTER_SCAN kills, keep the matching ones."""
    wanted = filters.from_query(query)
    kills = await store.latest(FILTER_SCAN)
    import ujson

    return [k.killmail_id for k in kills if wanted.matches(ujson.loads(k.body))][:INITIAL_ROWS]


async def test_a_filtered_page_renders_only_the_kills_it_shows(
    client: Client, static: StaticData, killmails: list[dict[str, Any]]
) -> None:
    store = client.server.app[store_key]
    await save_all(store, make_kills(static, killmails, 1200, first_id=10**10, kill_time=1_700_000_000))
    renders = count_renders(store)
    system = killmails[0]["solar_system_id"]
    queries = [{"system": str(system)}, {"sec": "lowsec"}, {"sec": "nullsec", "solo": "1"}, {"class": "frigates"}]
    expected = [await brute_force(store, q) for q in queries]
    renders()
    first = await client.get("/?" + "&".join(f"{k}={v}" for k, v in queries[0].items()))
    assert row_ids(await first.text()) == expected[0]
    # The first filtered page learns the keys of the newest FILTER_SCAN kills, once.
    assert renders() == FILTER_SCAN + len(expected[0])
    shown = set(expected[0])
    for n, (query, ids) in enumerate(zip(queries, expected, strict=True)):
        html = await (await client.get("/?" + "&".join(f"{k}={v}" for k, v in query.items()))).text()
        assert row_ids(html) == ids, query
        # 1,200 stored, only the shown rows read; the first page again: none (kept, web/viewcache.py);
        # a kill another view showed already is not read again (rows are kept per language).
        assert renders() == (0 if n == 0 else len(set(ids) - shown)), query
        shown |= set(ids)
    assert any(len(ids) == INITIAL_ROWS for ids in expected) and expected[0]
    assert len(shown) < sum(len(ids) for ids in expected)  # the views share kills: rows were reused

    # Kills stored later (here straight into the database, as an import beside the server
    # does) are picked up by sequence on the next page: their keys are computed once.
    await save_all(store, make_kills(static, killmails, 30, first_id=2 * 10**10, kill_time=1_700_000_000))
    html = await (await client.get(f"/?system={system}")).text()
    assert row_ids(html) == await brute_force(store, {"system": str(system)})
    renders()
    assert len(client.server.app[recent_key]) == FILTER_SCAN


async def test_pruned_kills_leave_the_page(client: Client, static: StaticData, killmails: list[dict[str, Any]]) -> None:
    store = client.server.app[store_key]
    await save_all(store, make_kills(static, killmails, 100, first_id=10**10, kill_time=1_000))
    await save_all(store, make_kills(static, killmails, 100, first_id=2 * 10**10, kill_time=2_000))
    query = "sec=highsec"
    before = row_ids(await (await client.get("/?" + query)).text())
    assert any(i < 2 * 10**10 for i in before)
    while await store.prune(older_than=1_500, batch=500):
        pass
    after = row_ids(await (await client.get("/?" + query)).text())
    assert after == [i for i in before if i >= 2 * 10**10] == await brute_force(store, {"sec": "highsec"})
    while await store.prune(older_than=3_000, batch=500):
        pass
    assert row_ids(await (await client.get("/?" + query)).text()) == []


async def test_a_fleet_fight_is_kept_as_maybe_and_still_found(
    client: Client, static: StaticData, killmails: list[dict[str, Any]]
) -> None:
    """A kill with hundreds of pilots would cost its keys in memory; it is kept as "maybe" and
    tested whole when a page could show it."""
    import copy
    import json

    from conftest import AUTH, settle

    from killboard.web.recent import MAX_KEYS

    store = client.server.app[store_key]
    await save_all(store, make_kills(static, killmails, 100, first_id=10**10, kill_time=1_700_000_000))
    fight = copy.deepcopy(max(killmails, key=lambda km: len(km["attackers"])))
    pool = [a for km in killmails for a in km["attackers"] if a.get("character_id")]
    fight["attackers"] = [dict(a, final_blow=False) for a in pool[:700]]
    fight["attackers"][0]["final_blow"] = True
    fight["killmail_id"] = 3 * 10**10
    resp = await client.post("/api/killmails", data=json.dumps(fight), headers=AUTH)
    assert resp.status == 202, await resp.text()
    await settle(client)

    last = pool[699]
    html = await (await client.get(f"/?character={last['character_id']}")).text()
    assert row_ids(html)[0] == fight["killmail_id"]  # found through its 700th attacker
    recent = client.server.app[recent_key]
    assert recent._keys[fight["killmail_id"]] is None  # more than MAX_KEYS: not kept
    assert len({a["character_id"] for a in pool[:700]}) > MAX_KEYS
    # A filter it does not meet leaves it out, although it was read to be tested.
    stored = await (await client.get(f"/api/killmails/{fight['killmail_id']}")).json()
    other = next(s for s in ("highsec", "lowsec", "nullsec", "wspace") if f'"{s}"' not in json.dumps(stored))
    assert fight["killmail_id"] not in row_ids(await (await client.get(f"/?sec={other}")).text())


async def test_a_start_compiles_the_templates_and_learns_the_keys_before_any_reader(
    make_client: Callable[..., Awaitable[Client]], static: StaticData, killmails: list[dict[str, Any]], tmp_path: Path
) -> None:
    """The first filtered page after a start reads and renders its rows only: the keys of the
    newest kills and every template are ready before it (server.py `_learn_recent`)."""
    db = tmp_path / "kept.sqlite3"
    store = await Store.open(db)
    try:
        await save_all(store, make_kills(static, killmails, 300, first_id=10**10, kill_time=1_700_000_000))
    finally:
        await store.close()
    client = await make_client(db_path=db)
    env = aiohttp_jinja2.get_env(client.server.app)

    async def ready() -> bool:
        compiled = {key[1] for key in list(env.cache.keys())} if env.cache is not None else set()
        return len(client.server.app[recent_key]) == 300 and compiled >= set(PAGES)

    await until(ready)


PAGES = ("index.html", "row.html", "macros.html", "entity.html", "battle.html", "battles.html", "kill.html")
