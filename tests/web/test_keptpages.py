"""Battle and entity pages and their JSON kept in the view cache (killboard/web/keptpages.py): a
view nothing changed reads no kill (304 when the browser has it), and the next view after a new
kill, a merge, a late name or a prune shows it."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from battlefights import fight, merging_halves, post_all, when
from conftest import Client
from test_recent import count_renders
from test_viewcache import row_of

from killboard.battles import items
from killboard.entities.service import Entities
from killboard.web.keys import battles_key, store_key


async def kept_view(client: Client, path: str, renders: Callable[[], int]) -> tuple[str, str]:
    """View twice: the second answer is the first's, from memory (no kill rendered), and a 304
    for the browser that has it. Returns (body, etag)."""
    first = await client.get(path)
    assert first.status == 200, await first.text()
    body, etag = await first.text(), first.headers["ETag"]
    renders()
    again = await client.get(path)
    assert await again.text() == body and again.headers["ETag"] == etag
    assert renders() == 0, path
    cached = await client.get(path, headers={"If-None-Match": etag})
    assert cached.status == 304 and await cached.read() == b""
    return body, etag


async def test_a_battle_page_is_kept_until_its_battle_grows_or_merges(client: Client) -> None:
    early, middle, late = merging_halves()
    await post_all(client, early)
    await post_all(client, late)
    listing = await (await client.get("/api/battles")).json()
    first, second = sorted(b["battle_id"] for b in listing["battles"])
    renders = count_renders(client.server.app[store_key])
    views = {}
    for path in (f"/battle/{first}", f"/api/battles/{first}", "/battles", "/api/battles"):
        views[path] = await kept_view(client, path, renders)
    assert json.loads(views[f"/api/battles/{first}"][0])["kill_count"] == len(early)

    # A kill elsewhere: the battle's own page and JSON stay kept; the lists (they resume from
    # the last stored seq) are rebuilt.
    elsewhere = copy.deepcopy(fight("30001155")[0])
    await post_all(client, [elsewhere])
    for path in (f"/battle/{first}", f"/api/battles/{first}"):
        resp = await client.get(path, headers={"If-None-Match": views[path][1]})
        assert resp.status == 304, path

    # The middle of the fight merges the two battles: the kept pages show it on the next view.
    await post_all(client, middle)
    resp = await client.get(f"/api/battles/{first}", headers={"If-None-Match": views[f"/api/battles/{first}"][1]})
    assert resp.status == 200 and (await resp.json())["kill_count"] == len(early + middle + late)
    page = await client.get(f"/battle/{first}", headers={"If-None-Match": views[f"/battle/{first}"][1]})
    assert page.status == 200 and await page.text() != views[f"/battle/{first}"][0]
    gone = await client.get(f"/battle/{second}", allow_redirects=False)
    assert gone.status == 308 and gone.headers["Location"] == f"/battle/{first}"
    [one] = (await (await client.get("/api/battles")).json())["battles"]
    assert one["battle_id"] == first and one["kill_count"] == len(early + middle + late)


async def test_a_late_name_and_a_prune_show_on_the_next_battle_view(client: Client) -> None:
    kills = sorted(fight("30001155"), key=when)
    await post_all(client, kills)
    [battle] = (await (await client.get("/api/battles")).json())["battles"]
    path = f"/api/battles/{battle['battle_id']}"
    data = await (await client.get(path)).json()
    entity = data["sides"][0]["entities"][0]["id"]
    await client.server.app[store_key].save_names({entity: ("Renamed In Time", "alliance")})
    assert (await (await client.get(path)).json())["names"][str(entity)] == "Renamed In Time"
    store = client.server.app[store_key]
    while await store.prune(older_than=time.time(), batch=500):
        pass
    assert (await client.get(path)).status == 404
    assert (await (await client.get("/api/battles")).json())["battles"] == []


def busiest_victim(killmails: list[dict[str, Any]]) -> dict[str, Any]:
    return next(k for k in killmails if k["victim"].get("character_id"))


async def test_an_entitys_kills_and_figures_are_kept_until_one_of_its_own_kills(
    client: Client, killmails: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    km = busiest_victim(killmails)
    character = km["victim"]["character_id"]
    await post_all(client, killmails)
    renders = count_renders(client.server.app[store_key])
    kills_path, figures_path, page_path = (
        f"/api/character/{character}/kills?limit=50",
        f"/api/character/{character}",
        f"/character/{character}",
    )
    body, kills_etag = await kept_view(client, kills_path, renders)
    shown = [k["killmail_id"] for k in json.loads(body)["kills"]]
    assert km["killmail_id"] in shown
    _, figures_etag = await kept_view(client, figures_path, renders)
    figured = [0]
    real = Entities.figures

    async def counted(self: Entities, *args: Any) -> Any:
        figured[0] += 1
        return await real(self, *args)

    monkeypatch.setattr(Entities, "figures", counted)
    _, page_etag = await kept_view(client, page_path, renders)
    assert figured[0] == 1  # the second view read no figures

    # A kill of someone else: the entity's JSON stays kept (its page resumes from the last seq).
    other = copy.deepcopy(next(k for k in killmails if str(character) not in json.dumps(k)))
    other["killmail_id"] = 9 * 10**9
    await post_all(client, [other])
    for path, etag in ((kills_path, kills_etag), (figures_path, figures_etag)):
        assert (await client.get(path, headers={"If-None-Match": etag})).status == 304, path
    assert (await client.get(page_path, headers={"If-None-Match": page_etag})).status == 200

    # One of its own: shown on the next view of each.
    own = copy.deepcopy(km)
    own["killmail_id"] = 9 * 10**9 + 1
    await post_all(client, [own])
    kills = await (await client.get(kills_path)).json()
    assert kills["kills"][0]["killmail_id"] == own["killmail_id"]
    figures = await (await client.get(figures_path)).json()
    assert figures["losses"] == sum(k["victim"].get("character_id") == character for k in killmails) + 1
    assert f'data-id="{own["killmail_id"]}"' in await (await client.get(page_path)).text()

    # A late name, then a prune.
    await client.server.app[store_key].save_names({character: ("Late Pilot", "character")})
    assert (await (await client.get(figures_path)).json())["name"] == "Late Pilot"
    # The page's row of the kill showed the pilot nameless: it is rendered again with the name.
    assert "Late Pilot" in row_of(await (await client.get(page_path)).text(), own["killmail_id"])
    store = client.server.app[store_key]
    while await store.prune(older_than=time.time() + 10**6, batch=500):
        pass
    assert (await (await client.get(kills_path)).json())["kills"] == []


async def test_concurrent_first_views_of_a_page_render_it_once(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    kills = sorted(fight("30001155"), key=when)
    await post_all(client, kills)
    [battle] = (await (await client.get("/api/battles")).json())["battles"]
    renders = count_renders(client.server.app[store_key])
    summed, lost_of_rows = [0], items.lost_of_rows

    def counted_rows(rows: Any, unpack: Any) -> Any:
        summed[0] += len(rows)
        return lost_of_rows(rows, unpack)

    monkeypatch.setattr(items, "lost_of_rows", counted_rows)
    service = client.server.app[battles_key]
    real, details = service.summarize, [0]

    async def counted(*args: Any, **kwargs: Any) -> dict[str, Any]:
        details[0] += bool(kwargs.get("detail"))
        return await real(*args, **kwargs)

    service.summarize = counted  # type: ignore[method-assign]
    for path in (f"/battle/{battle['battle_id']}", f"/api/battles/{battle['battle_id']}"):
        answers = await asyncio.gather(*(client.get(path) for _ in range(8)))
        bodies = {await r.text() for r in answers}
        assert [r.status for r in answers] == [200] * 8 and len(bodies) == 1, path
        assert len({r.headers["ETag"] for r in answers}) == 1
        assert details == [1], path  # one render, seven views waited for it
        details[0] = 0
    # The page read each of the battle's kills once (the victims' items, from the stored rows:
    # no kill rendered), and the JSON none: the items' sums are kept by kill.
    assert summed == [battle["kill_count"]] and renders() == 0
    # A view that is not kept (unknown battle) is answered by the handler each time.
    missing = await asyncio.gather(*(client.get("/battle/999999") for _ in range(3)))
    assert [r.status for r in missing] == [404] * 3


async def test_a_query_name_a_page_does_not_read_is_the_same_page(client: Client) -> None:
    """A cache-buster (`?_=<time>`) or any name the page does not read is the kept page, not
    another render and entry each; a name it reads is another page."""
    kills = sorted(fight("30001155"), key=when)
    await post_all(client, kills)
    [battle] = (await (await client.get("/api/battles")).json())["battles"]
    battle_id, pilot = battle["battle_id"], kills[0]["victim"]["character_id"]
    side_entity = battle["sides"][0]["entities"][0]["id"]
    renders = count_renders(client.server.app[store_key])
    for path, read in (
        (f"/battle/{battle_id}", None),
        (f"/api/battles/{battle_id}", f"side.{side_entity}=2"),
        ("/battles", f"cursor={battle['start_time'] + 1}_1"),
        ("/api/battles", "limit=1"),
        (f"/character/{pilot}", "role=loss"),
        (f"/api/character/{pilot}", "lang=de"),
        (f"/api/character/{pilot}/kills", "limit=1"),
    ):
        plain = await client.get(path)
        assert plain.status == 200, path
        body, etag = await plain.text(), plain.headers["ETag"]
        renders()
        for junk in ("_=1733620000", "_=1733620001", "x=1&y=%FF", "limit2=3"):
            again = await client.get(f"{path}?{junk}")
            assert again.status == 200 and again.headers["ETag"] == etag, (path, junk)
            assert await again.text() == body
        assert renders() == 0, path
        if read is not None:
            # The name it reads, beside junk: another page, the same as without the junk.
            other = await client.get(f"{path}?zz=1&{read}")
            clean = await client.get(f"{path}?{read}")
            assert other.status == clean.status == 200, (path, await other.text())
            assert other.headers["ETag"] == clean.headers["ETag"] != etag, path
