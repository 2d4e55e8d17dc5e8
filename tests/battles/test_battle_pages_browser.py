"""/battles and /battle/{id} in the real Chromium: a battle that grows while the page is open."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from battlefights import fight
from browser import launch, new_page
from conftest import AUTH, Client, settle
from playwright.async_api import Browser, expect
from test_battle_tables import shifted

from killboard.web.keys import store_key

expect.set_options(timeout=10_000)
HOSTILE = "<img src=x onerror=alert(1)>"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async for b in launch():
        yield b


async def post(client: Client, kills: list[dict[str, Any]]) -> None:
    resp = await client.post("/api/killmails", data=json.dumps(kills), headers=AUTH)
    assert resp.status == 202, await resp.text()
    await settle(client)


def in_order(system: str) -> list[dict[str, Any]]:
    return sorted(fight(system), key=lambda k: (k["killmail_time"], k["killmail_id"]))


async def test_pages_without_a_browser(client: Client) -> None:
    resp = await client.get("/battle/42")
    assert resp.status == 404 and "No battle 42" in await resp.text()
    resp = await client.get("/battles")
    assert resp.status == 200 and "No battle yet" in await resp.text()
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    kills = in_order("30001155")[:5]
    await post(client, kills)
    page = await (await client.get(f"/kill/{kills[0]['killmail_id']}")).text()
    assert 'href="/battle/1"' in page
    # The listing names each side by its biggest alliance or corporation, and links it and the
    # system to their pages; the battle's page links its entities, ships and system too.
    [summary] = (await (await client.get("/api/battles")).json())["battles"]
    detail = await (await client.get("/api/battles/1")).json()
    listing = await (await client.get("/battles")).text()
    leads = [side["entities"][0] for side in summary["sides"]]
    assert len(leads) >= 2 and 'href="/system/30001155"' in listing
    assert all(f'href="/{e["kind"]}/{e["id"]}"' in listing for e in leads), leads
    battle = await (await client.get("/battle/1")).text()
    assert 'href="/system/30001155"' in battle
    entities = [e for side in detail["sides"] for e in side["entities"]]
    assert all(f'href="/{e["kind"]}/{e["id"]}"' in battle for e in entities if e["kind"] != "faction")
    assert all(f'href="/ship/{ship["type_id"]}"' in battle for side in detail["sides"] for ship in side["ships"])
    for e in entities:
        counted = f"{e['pilots']} pilot{'' if e['pilots'] == 1 else 's'}" if e["pilots"] else "NPCs"
        assert f"{e['kind']} · {counted}</span>" in battle, e
    # Ships in the reader's language (the Muninn, type 12015, flew in this fight).
    japanese = await (await client.get("/battle/1", headers={"Accept-Language": "ja,en;q=0.5"})).text()
    assert "ムニン" in japanese and '<html lang="ja">' in japanese
    assert "ムニン" not in await (await client.get("/battle/1")).text()


async def test_the_battles_page_pages_back(client: Client) -> None:
    # The first five kills of a real fight, again every two hours under fresh ids: 52 battles.
    five = in_order("30001155")[:5]
    copies = [k for n in range(52) for k in shifted(five, 120 * n, 10_000_000 * (n + 1))]
    for i in range(0, len(copies), 50):
        await post(client, copies[i : i + 50])
    newest = await (await client.get("/battles")).text()
    ids = re.findall(r'<tr class="battle[^"]*" data-battle-id="(\d+)"', newest)
    assert len(ids) == 50 and "← Newest" not in newest
    older = re.search(r'<a href="(/battles\?cursor=\d+_\d+)" rel="next">', newest)
    assert older is not None
    page = await (await client.get(older.group(1))).text()
    rest = re.findall(r'<tr class="battle[^"]*" data-battle-id="(\d+)"', page)
    assert len(rest) == 2 and "← Newest" in page and 'rel="next"' not in page
    assert sorted(map(int, ids + rest)) == list(range(1, 53))  # each battle once
    listed = (await (await client.get("/api/battles?limit=50")).json())["next"]
    assert older.group(1).endswith(listed)  # the API's cursor, the same page
    resp = await client.get("/battles?cursor=x")
    assert resp.status == 400 and "cursor: expected" in await resp.text()


@pytest.mark.browser
async def test_a_battle_grows_while_its_page_is_open(client: Client, browser: Browser) -> None:
    kills = in_order("30001155")
    await post(client, kills[:5])
    # A name from outside with HTML in it is shown as text.
    await client.server.app[store_key].save_names({99005338: (HOSTILE, "alliance")})
    _, page, watch = await new_page(browser)
    await page.goto(str(client.make_url("/battle/1")))
    await expect(page.locator("h1 + p .kills")).to_have_text("5")
    await expect(page.locator(".timeline li")).to_have_count(5)
    await post(client, kills[5:40])
    await expect(page.locator("h1 + p .kills")).to_have_text("40")
    await expect(page.locator(".timeline li")).to_have_count(40)
    assert await page.locator(".side").count() >= 2
    await expect(page.locator(".entities", has_text=HOSTILE).first).to_be_visible()
    assert await page.locator("img[src=x]").count() == 0
    # Keyboard: the timeline's links are reachable with Tab.
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.tagName") == "A"

    listing = await browser.new_page()
    await listing.goto(str(client.make_url("/battles")))
    await expect(listing.locator("tr.battle")).to_have_count(1)
    await expect(listing.locator(".leads", has_text=HOSTILE)).to_be_visible()  # as text, as on the battle
    assert await listing.locator("img[src=x]").count() == 0
    await post(client, in_order("30002472")[:60])
    await expect(listing.locator("tr.battle")).to_have_count(2)
    # Phone width: nothing wider than the screen.
    await page.set_viewport_size({"width": 390, "height": 800})
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    assert watch.errors == [] and watch.dialogs == []
