"""Entity pages and the search box in the real Chromium: live kills and figures, keyboard completion,
and the kill page's fitting with Copy as EFT."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from battlefights import fight
from browser import launch, new_page
from conftest import AUTH, Client, settle
from playwright.async_api import Browser, expect
from test_entity_figures import busiest

pytestmark = pytest.mark.browser
expect.set_options(timeout=10_000)
MakeClient = Callable[..., Awaitable[Client]]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async for b in launch():
        yield b


async def post(client: Client, body: Any) -> None:
    resp = await client.post("/api/killmails", data=json.dumps(body), headers=AUTH)
    assert resp.status == 202, await resp.text()
    await settle(client)


async def test_entity_page_takes_new_kills_and_figures_live(
    make_client: MakeClient, browser: Browser, killmails: list[dict[str, Any]]
) -> None:
    client = await make_client()
    corporation = busiest(killmails, "corporation_id")
    mine = [k for k in killmails if corporation in {p.get("corporation_id") for p in (k["victim"], *k["attackers"])}]
    assert len(mine) >= 3
    await post(client, mine[:-1])
    _, page, watch = await new_page(browser)
    await page.goto(str(client.make_url(f"/corporation/{corporation}")))
    await expect(page.locator("#status")).to_have_attribute("data-state", "live")
    await expect(page.locator("#feed li.kill")).to_have_count(len(mine) - 1)
    before = await (await client.get(f"/api/corporation/{corporation}")).json()
    kills_box = page.locator('[data-figure="kills"]')
    losses_box = page.locator('[data-figure="losses"]')
    await expect(kills_box).to_have_text(f"{before['kills']:,}")

    await post(client, mine[-1])  # a new kill of this corporation: its row and its figures appear
    await expect(page.locator("#feed li.kill")).to_have_count(len(mine))
    assert await page.locator("#feed li.kill").first.get_attribute("data-id") == str(mine[-1]["killmail_id"])
    after = await (await client.get(f"/api/corporation/{corporation}")).json()
    assert (after["kills"], after["losses"]) != (before["kills"], before["losses"])
    await expect(kills_box).to_have_text(f"{after['kills']:,}")
    await expect(losses_box).to_have_text(f"{after['losses']:,}")
    # Names link to their pages; a click goes there.
    await page.locator("#feed li.kill .where > a").first.click()
    await expect(page).to_have_url(re.compile(r"/system/\d+$"))
    await expect(page.locator("#entity-name")).not_to_be_empty()
    assert watch.errors == [] and watch.dialogs == []


async def test_a_quiet_entitys_months_follow_a_later_kill_live(
    make_client: MakeClient, browser: Browser, killmails: list[dict[str, Any]]
) -> None:
    # A corporation whose real kills are more than a year apart, all long ago: its page shows the
    # year up to its older kill, and moves to the newer kill's year when that kill arrives.
    def months_of(corporation: int) -> list[dict[str, Any]]:
        return [
            k for k in killmails if corporation in {p.get("corporation_id") for p in (k["victim"], *k["attackers"])}
        ]

    def span(kills: list[dict[str, Any]]) -> int:
        first, last = min(k["killmail_time"] for k in kills), max(k["killmail_time"] for k in kills)
        return (int(last[:4]) - int(first[:4])) * 12 + int(last[5:7]) - int(first[5:7])

    corporations = {
        p["corporation_id"] for k in killmails for p in (k["victim"], *k["attackers"]) if p.get("corporation_id")
    }
    corporation = next(
        c
        for c in sorted(corporations)
        if len(mine := months_of(c)) == 2 and span(mine) >= 12 and max(k["killmail_time"] for k in mine) < "2025"
    )
    older, newer = sorted(months_of(corporation), key=lambda k: k["killmail_time"])
    client = await make_client()
    await post(client, older)
    _, page, watch = await new_page(browser)
    await page.goto(str(client.make_url(f"/corporation/{corporation}")))
    await expect(page.locator("#status")).to_have_attribute("data-state", "live")
    heading = page.locator("#months-h")
    await expect(heading).to_have_text(f"12 months to {older['killmail_time'][:7]} nothing since")
    await post(client, newer)
    await expect(heading).to_have_text(f"12 months to {newer['killmail_time'][:7]} nothing since")
    rows = page.locator("#months tbody tr")
    await expect(rows).to_have_count(12)
    await expect(rows.first).to_have_attribute("data-month", newer["killmail_time"][:7])
    await expect(rows.first.locator("td.num").first).not_to_be_empty()
    month, kills, losses, _ = await rows.first.locator("td").all_text_contents()
    assert month == newer["killmail_time"][:7] and "1" in (kills, losses)
    assert watch.errors == [] and watch.dialogs == []


async def test_an_older_page_is_history_not_followed(make_client: MakeClient, browser: Browser) -> None:
    client = await make_client()
    kills = fight("30001155")
    await post(client, kills)
    _, page, watch = await new_page(browser)
    await page.goto(str(client.make_url("/alliance/1354830081")))
    await expect(page.locator("#status")).to_have_attribute("data-state", "live")
    opened: list[str] = []
    page.on("websocket", lambda socket: opened.append(socket.url))
    await page.locator('.pager a[rel="next"]').click()
    await expect(page).to_have_url(re.compile(r"/alliance/1354830081\?before=\d+$"))
    await expect(page.locator("#feed li.kill")).to_have_count(50)
    await expect(page.locator("#feed li.kill time").first).to_have_text(re.compile(r"\d+ y ago"))
    await post(client, kills[:1])  # nothing new reaches an older page, and no socket is opened
    await page.wait_for_timeout(1500)
    assert await page.locator("#status").get_attribute("data-state") == "static"
    assert await page.locator("#pause").is_hidden()
    assert opened == [] and watch.errors == [] and watch.dialogs == []
    await page.locator(".pager a", has_text="Newest").click()
    await expect(page.locator("#status")).to_have_attribute("data-state", "live")


async def test_the_losses_tab_takes_only_losses_live(make_client: MakeClient, browser: Browser) -> None:
    client = await make_client()
    alliance = 1354830081
    kills = fight("30001155")
    lost = [k for k in kills if k["victim"].get("alliance_id") == alliance]
    killed = [k for k in kills if k not in lost and any(a.get("alliance_id") == alliance for a in k["attackers"])]
    await post(client, lost[:3])
    _, page, watch = await new_page(browser)
    await page.goto(str(client.make_url(f"/alliance/{alliance}?role=loss")))
    await expect(page.locator("#status")).to_have_attribute("data-state", "live")
    await expect(page.locator("#feed li.kill")).to_have_count(3)
    await post(client, killed[:2])  # its kills: not on this tab
    await post(client, lost[3:4])  # a loss: at once
    await expect(page.locator("#feed li.kill").first).to_have_attribute("data-id", str(lost[3]["killmail_id"]))
    await expect(page.locator("#feed li.kill")).to_have_count(4)
    await page.locator(".tabs a", has_text="Kills").click()
    await expect(page.locator("#feed li.kill")).to_have_count(2)
    assert watch.errors == [] and watch.dialogs == []


async def test_search_box_completes_with_the_keyboard(make_client: MakeClient, browser: Browser) -> None:
    client = await make_client()
    _, page, watch = await new_page(browser)
    await page.goto(str(client.make_url("/")))
    box = page.locator("#search input[name=q]")
    await box.click()
    await box.press_sequentially("jit")
    options = page.locator("#search-results li")
    await expect(options.first).to_contain_text("Jita")
    await box.press("ArrowDown")
    await box.press("ArrowUp")
    await expect(options.first).to_have_attribute("aria-selected", "true")
    await box.press("Enter")
    await expect(page).to_have_url(str(client.make_url("/system/30000142")))
    await expect(page.locator("#entity-name")).to_have_text("Jita")
    # The box is on the entity page too.
    await page.locator("#search input[name=q]").fill("")
    await page.locator("#search input[name=q]").press_sequentially("Rifter")
    await expect(page.locator("#search-results li").first).to_contain_text("Rifter")
    assert watch.errors == [] and watch.dialogs == []


async def test_kill_page_copies_the_fitting_as_eft(
    make_client: MakeClient, browser: Browser, killmails: list[dict[str, Any]]
) -> None:
    client = await make_client()
    esi = max(killmails, key=lambda k: len(k["victim"].get("items", ())))
    await post(client, esi)
    context, page, watch = await new_page(browser)
    await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=str(client.make_url("/")).rstrip("/"))
    await page.goto(str(client.make_url(f"/kill/{esi['killmail_id']}")))
    await expect(page.locator(".fitting h3").first).to_have_text("High slots")
    await page.locator("#copy-eft").click()
    await expect(page.locator("#copy-status")).to_have_text("copied")
    copied = await page.evaluate("navigator.clipboard.readText()")
    assert copied == await page.locator("#eft").text_content()
    assert copied.startswith("[") and "\n\n" in copied
    assert watch.errors == [] and watch.dialogs == []
