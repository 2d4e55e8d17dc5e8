"""A battle's items worked out from the stored rows (battles/items.py) equal the rendered kills'."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from battlefights import fight, post_all, when
from conftest import Client
from killgen import make_kills, save_all

from killboard.battles import items
from killboard.kill.staticdata import StaticData
from killboard.storage.store import Store
from killboard.web.keys import battles_key, store_key, viewcache_key

ROWS = "SELECT killmail_id, codec, body FROM kills ORDER BY killmail_id"


async def test_the_sums_from_the_stored_rows_are_the_rendered_kills_sums(
    tmp_path: Path, static: StaticData, killmails: list[dict[str, Any]]
) -> None:
    """The 82 real kills (containers, blueprint copies, zkb values): the same four sums, to the
    last bit, as rendering each kill in full and adding up its enriched items."""
    store = await Store.open(tmp_path / "kb.sqlite3")
    try:
        await save_all(store, make_kills(static, killmails, len(killmails), 500_000_000, 1_700_000_000))
        rows = await store.query(ROWS)
        found, unpriced = items.lost_of_rows(rows, store.unpack)
        rendered = items.lost_of_bodies(k.body for k in await store.many([r[0] for r in rows]))
    finally:
        await store.close()
    assert unpriced == [] and len(found) == len(killmails)
    assert found == rendered
    assert sum(lost.destroyed_isk + lost.dropped_isk for lost in found.values()) > 0


async def test_a_kill_stored_without_its_prices_is_valued_by_the_full_render(
    tmp_path: Path, static: StaticData, killmails: list[dict[str, Any]]
) -> None:
    """A document from before prices were kept is valued with today's prices: left to the render."""
    store = await Store.open(tmp_path / "kb.sqlite3")
    try:
        fitted = [k for k in killmails if k["victim"].get("items")][:3]
        await save_all(store, make_kills(static, fitted, 3, 500_000_000, 1_700_000_000))
        km = fitted[1]
        esi = {k: v for k, v in km.items() if k not in ("zkb", "killmail_hash")}
        assert await store.rewrite(500_000_001, esi, km.get("zkb"), None)
        found, unpriced = items.lost_of_rows(await store.query(ROWS), store.unpack)
    finally:
        await store.close()
    assert unpriced == [500_000_001] and sorted(found) == [500_000_000, 500_000_002]


@pytest.mark.parametrize("path", ["/api/battles/{}", "/battle/{}"])
async def test_a_battles_detail_is_the_same_as_with_every_kill_rendered(
    client: Client, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """The page and its JSON, worked out from the stored rows and again (caches dropped) with
    every kill rendered in full as before: byte for byte the same."""
    await post_all(client, sorted(fight("30001155"), key=when))
    [battle] = (await (await client.get("/api/battles")).json())["battles"]
    url = path.format(battle["battle_id"])
    fast = await (await client.get(url)).read()

    def render_every_kill(rows: Any, unpack: Any) -> tuple[dict[int, Any], list[int]]:
        return {}, [row[0] for row in rows]

    monkeypatch.setattr(items, "lost_of_rows", render_every_kill)
    client.server.app[battles_key].forget()
    client.server.app[viewcache_key].changed(())  # and the view cache its kept pages
    slow = await (await client.get(url)).read()
    assert fast == slow and b"isk" in fast.lower()


async def test_a_kill_rewritten_while_the_items_are_read_is_read_again(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sum read before a rewrite is not kept: the next view reads that kill's new items (and
    only that kill's: the others' sums were kept)."""
    kills = sorted(fight("30001155"), key=when)
    await post_all(client, kills)
    [battle] = (await (await client.get("/api/battles")).json())["battles"]
    path = f"/api/battles/{battle['battle_id']}"
    store = client.server.app[store_key]
    km = max(kills, key=lambda k: len(k["victim"].get("items") or ()))
    esi = {k: v for k, v in km.items() if k != "zkb"}
    victim = {k: v for k, v in km["victim"].items() if k != "items"}
    query = store.query

    async def read_then_rewrite(sql: str, args: Any = ()) -> list[tuple[Any, ...]]:
        rows = await query(sql, args)
        if "codec, body" in sql and km["killmail_id"] in args:
            store.query = query  # type: ignore[method-assign]
            assert await store.rewrite(km["killmail_id"], {**esi, "victim": victim}, km.get("zkb"))
        return rows

    store.query = read_then_rewrite  # type: ignore[method-assign]
    before = await (await client.get(path)).json()
    assert store.query == query  # the rewrite happened during that view's read
    summed, lost_of_rows = [], items.lost_of_rows

    def counted(rows: Any, unpack: Any) -> Any:
        summed.extend(row[0] for row in rows)
        return lost_of_rows(rows, unpack)

    monkeypatch.setattr(items, "lost_of_rows", counted)
    after = await (await client.get(path)).json()
    assert summed == [km["killmail_id"]]

    def pieces(data: dict[str, Any]) -> int:
        return sum(s["items_destroyed"]["count"] + s["items_dropped"]["count"] for s in data["sides"])

    lost = sum(
        int(i.get("quantity_destroyed") or 0) + int(i.get("quantity_dropped") or 0) for i in km["victim"]["items"]
    )
    assert lost > 0 and pieces(after) == pieces(before) - lost
