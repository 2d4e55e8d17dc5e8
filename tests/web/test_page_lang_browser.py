"""The page in the reader's language, over permessage-deflate and without: real headless Chromium
against the real app, all 82 real kills."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from browser import Watch, launch
from conftest import AUTH, settle
from playwright.async_api import Browser, WebSocket, expect

from killboard.web.keys import hub_key

pytestmark = pytest.mark.browser
expect.set_options(timeout=15_000)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async for b in launch():
        yield b


# Level 6 deflates with zlib-ng, level 1 (a burst's) with isal, where installed (live/wire.py).
@pytest.mark.parametrize(
    ("deflate", "level"), [(True, 6), (True, 1), (False, 6)], ids=["deflate", "deflate-level-1", "plain"]
)
async def test_page_shows_names_in_the_readers_language(
    make_client: Any, browser: Browser, killmails: list[dict[str, Any]], deflate: bool, level: int
) -> None:
    client = await make_client(ws_deflate=deflate, ws_deflate_level=level)
    context = await browser.new_context(locale="de-DE", viewport={"width": 1280, "height": 900})
    await context.route("https://images.evetech.net/**", lambda route: route.abort())
    page = await context.new_page()
    watch = Watch()
    page.on("console", watch.on_console)
    page.on("pageerror", watch.on_page_error)
    frames: list[str] = []

    def on_socket(ws: WebSocket) -> None:
        ws.on("framereceived", lambda payload: frames.append(payload if isinstance(payload, str) else "binary"))

    page.on("websocket", on_socket)
    # A plain reference client asking for the same language.
    reference = await client.ws_connect("/ws?lang=de", compress=0)
    await reference.send_str(json.dumps({"action": "sub", "channel": "kills"}))
    await reference.receive_json(timeout=5)

    hub = client.server.app[hub_key]
    before = set(hub._subscribers)
    await page.goto(str(client.make_url("/")))
    await expect(page.locator("#status")).to_have_attribute("data-state", "live")
    assert await page.evaluate("KB.lang") == "de"
    assert await page.evaluate("document.documentElement.lang") == "de"
    [sub] = [s for ws, s in hub._subscribers.items() if ws not in before]  # the page's socket
    assert sub.lang == ("en", "de") and sub.deflate == (15 if deflate else 0)

    resp = await client.post("/api/killmails", data=json.dumps(killmails), headers=AUTH)
    assert resp.status == 202
    await settle(client)
    want = []
    while len(want) < len(killmails):
        message = await reference.receive_json(timeout=20)
        if message["action"] == "kill":
            want.append(message)
    await expect(page.locator("#feed li.kill")).to_have_count(len(killmails))
    got = [json.loads(f) for f in frames if f != "binary" and json.loads(f).get("action") == "kill"]
    assert "binary" not in frames
    assert got == want  # Chromium inflated every frame to exactly the plain client's JSON

    # Rows show the German names (English where the data has none in German).
    for message in want[-5:]:
        kill = message["data"]
        names = kill["victim"]["ship_name"]
        row = page.locator(f'#feed li.kill[data-id="{kill["killmail_id"]}"]')
        await expect(row.locator(".ship a")).to_have_text(names.get("de") or names["en"])
    # The server-rendered page reads Accept-Language (de-DE) the same way.
    await page.reload()
    kill = want[-1]["data"]
    row = page.locator(f'#feed li.kill[data-id="{kill["killmail_id"]}"]')
    await expect(row.locator(".ship a")).to_have_text(kill["victim"]["ship_name"].get("de") or "")
    assert watch.errors == []
    await context.close()
