"""The HTML pages as the server sends them (no browser): rows, escaping, filters, detail, CSP."""

from __future__ import annotations

import json
import logging
import re
from html import unescape
from typing import Any

import pytest
from conftest import AUTH, Client, settle

from killboard.kill.topics import SHIP_GROUP_TOPICS
from killboard.logs import CLIENT
from killboard.web.keys import store_key

HOSTILE = "<img src=x onerror=alert(1)>"


async def post(client: Client, body: Any) -> None:
    resp = await client.post("/api/killmails", data=json.dumps(body), headers=AUTH)
    assert resp.status == 202, await resp.text()
    await settle(client)


async def set_name(client: Client, entity_id: int, name: str, category: str = "character") -> None:
    """What the ESI name resolver stores: the names table the enricher reads."""
    await client.server.app[store_key].save_names({entity_id: (name, category)})


def row_ids(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'<li class="kill[^"]*" data-id="(\d+)"', html)]


async def test_empty_board_says_so(client: Client) -> None:
    resp = await client.get("/")
    assert resp.status == 200
    html = await resp.text()
    assert "No kills yet" in html and row_ids(html) == []


async def test_latest_kills_are_rendered_newest_first(client: Client, killmails: list[dict[str, Any]]) -> None:
    await post(client, killmails)
    html = await (await client.get("/")).text()
    expected = sorted((k["killmail_id"] for k in killmails), reverse=True)[:50]
    assert row_ids(html) == expected
    newest = await (await client.get(f"/api/killmails/{expected[0]}")).json()
    assert newest["system_name"] and newest["system_name"] in html
    assert f'data-last-seq="{len(killmails)}"' in html  # where the page resumes from
    assert 'data-channel="kills"' in html


async def test_the_feed_pages_back_through_every_kill(
    client: Client, killmails: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    await post(client, killmails)
    url, seen, pages = "/", [], 0
    while url:
        html = await (await client.get(url)).text()
        ids = row_ids(html)
        assert 0 < len(ids) <= 50 and ids == sorted(ids, reverse=True)
        seen += ids
        assert ('data-live="off"' in html) == (pages > 0) and ("← Newest" in html) == (pages > 0)
        older = re.search(r'<a href="(/\?before=\d+)" rel="next">', html)
        url, pages = older.group(1) if older else "", pages + 1
    assert seen == sorted((k["killmail_id"] for k in killmails), reverse=True) and pages == 2
    # The same pages as the API's `before`; a bad value is a 400 (a filter's pages: test_older.py).
    api = await (await client.get("/api/killmails?limit=50")).json()
    assert (await client.get(f"/?before={api['next_before']}")).status == 200
    with caplog.at_level(logging.INFO, "killboard.web.pages"):
        bad = await client.get("/?before=x")
    assert bad.status == 400 and "before: must be a killmail id" in await bad.text()
    [line] = [r for r in caplog.records if r.name == "killboard.web.pages"]  # once, as a client's line
    assert "before: must be a killmail id" in line.getMessage() and getattr(line, CLIENT, None)
    reordered = await client.get("/?before=5&solo=1", allow_redirects=False)
    assert reordered.status == 302 and reordered.headers["Location"] == "/?solo=1&before=5"


async def test_content_security_policy_allows_no_inline_script(client: Client) -> None:
    for path in ("/", "/kill/1", "/static/feed.js"):
        resp = await client.get(path)
        csp = resp.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "default-src 'none'" in csp, path
    html = await (await client.get("/")).text()
    # Every script is a file: nothing inline for the policy to have to allow.
    assert re.findall(r"<script[^>]*>", html) == [
        '<script src="/static/search.js" defer>',
        '<script src="/static/feed.js" defer>',
    ]
    assert not re.search(r"<[^>]*\son[a-z]+=", html)  # no onclick= and the like either


async def test_hostile_name_is_escaped(client: Client, killmails: list[dict[str, Any]]) -> None:
    km = killmails[0]
    await set_name(client, km["victim"]["character_id"], HOSTILE)
    await post(client, km)
    for path in ("/", f"/kill/{km['killmail_id']}"):
        html = await (await client.get(path)).text()
        assert HOSTILE not in html, path
        assert "&lt;img src=x onerror=alert(1)&gt;" in html, path


async def test_filter_in_the_link_renders_only_matching_kills(client: Client, killmails: list[dict[str, Any]]) -> None:
    await post(client, killmails)
    stored = (await (await client.get("/api/killmails?limit=500")).json())["killmails"]
    highsec = {k["killmail_id"] for k in stored if k["security_class"] == "highsec" and k["is_solo"]}
    assert highsec and len(highsec) < len(stored)
    html = await (await client.get("/?sec=highsec&solo=1")).text()
    assert sorted(row_ids(html)) == sorted(highsec)[-50:]
    assert 'data-channel="highsec&amp;solo"' in html
    frigates = {k["killmail_id"] for k in stored if k["victim"]["ship_group_id"] in SHIP_GROUP_TOPICS["frigates"]}
    assert frigates
    html = await (await client.get("/?class=frigates")).text()
    assert set(row_ids(html)) == frigates
    region = stored[0]["region_id"]
    html = await (await client.get(f"/?region={region}")).text()
    assert set(row_ids(html)) == {k["killmail_id"] for k in stored if k["region_id"] == region}


async def test_every_entity_pages_filtered_feed_link_filters(client: Client, killmails: list[dict[str, Any]]) -> None:
    """The "feed filtered to it" link of each kind of entity page opens the feed narrowed to it
    (a ship's and a group's went to /?id=… and on to the whole feed)."""
    await post(client, killmails)
    km = max(killmails, key=lambda k: len(k["attackers"]))
    kill = await (await client.get(f"/api/killmails/{km['killmail_id']}")).json()
    victim = kill["victim"]
    ids = {
        "character": victim["character_id"],
        "corporation": victim["corporation_id"],
        "system": kill["system_id"],
        "region": kill["region_id"],
        "ship": victim["ship_id"],
        "group": victim["ship_group_id"],
    }
    everyone = {k["killmail_id"] for k in killmails}
    for kind, entity_id in ids.items():
        page = await (await client.get(f"/{kind}/{entity_id}")).text()
        link = re.search(r'<a href="(/\?[^"]+)">feed filtered to it</a>', page)
        assert link is not None and unescape(link.group(1)) == f"/?{kind}={entity_id}", kind
        resp = await client.get(link.group(1), allow_redirects=False)
        assert resp.status == 200, (kind, resp.headers.get("Location"))
        shown = set(row_ids(await resp.text()))
        assert km["killmail_id"] in shown and shown < everyone, kind
        html = await (await client.get(link.group(1))).text()
        assert f'data-channel="{kind}:{entity_id}"' in html
        label = {
            "system": kill["system_name"],
            "region": kill["region_name"]["en"],
            "ship": victim["ship_name"]["en"],
            "group": victim["ship_group_name"]["en"],
        }.get(kind)
        if label:  # named by the static data (players need ESI, not here)
            assert f"</code>: {label}</p>" in html, (kind, label)


async def test_the_forms_query_redirects_to_the_short_link(client: Client) -> None:
    resp = await client.get("/?min=5b&sec=&kind=system&id=30000142", allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"] == "/?min=5b&system=30000142"
    resp = await client.get("/?min=&sec=&kind=system&id=", allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"] == "/"


async def test_kill_detail(client: Client, killmails: list[dict[str, Any]]) -> None:
    # The kill with the most attackers and items: order and grouping have something to show.
    km = max(killmails, key=lambda k: (len(k["attackers"]) > 2) * len(k["victim"].get("items", [])))
    await post(client, km)
    kill = await (await client.get(f"/api/killmails/{km['killmail_id']}")).json()
    resp = await client.get(f"/kill/{km['killmail_id']}")
    assert resp.status == 200
    html = await resp.text()
    rows = re.findall(r'<tr class="attacker( final)?">', html)
    assert len(rows) == len(kill["attackers"])
    assert rows[0] == " final" and " final" not in rows[1:]
    captions = [unescape(c) for c in re.findall(r"<caption>([^<]+?) <span", html)]
    assert captions and len(captions) == len(set(captions))
    order = ["High slots", "Mid slots", "Low slots", "Rigs", "Subsystems", "Drone bay", "Cargo"]
    known = [c for c in captions if c in order]
    assert known == sorted(known, key=order.index)
    for item in kill["items"]:
        assert unescape(item["name"]["en"]) in unescape(html)
    # The victim's corporation and alliance link to their pages, named or not yet (no ESI here).
    victim = km["victim"]
    line = re.search(r'<p class="victim-line">(.*?)</p>', html, re.S)
    assert line is not None
    for kind in ("corporation", "alliance"):
        if victim.get(f"{kind}_id"):
            assert f'href="/{kind}/{victim[f"{kind}_id"]}"' in line.group(1), (kind, line.group(1))


async def test_unknown_kill_is_a_404_page(client: Client) -> None:
    resp = await client.get("/kill/123")
    assert resp.status == 404
    assert resp.content_type == "text/html"
    assert "No kill 123 is stored here" in await resp.text()


async def test_every_page_leads_to_the_kills_and_the_battles(client: Client, killmails: list[dict[str, Any]]) -> None:
    await post(client, killmails)
    km = killmails[0]
    pages = {
        "/": "Kills",
        "/battles": "Battles",
        f"/kill/{km['killmail_id']}": None,
        f"/system/{km['solar_system_id']}": None,
        "/search?q=serp": None,
        "/kill/1": None,  # a 404 page too
    }
    for path, current in pages.items():
        html = await (await client.get(path)).text()
        nav = re.search(r'<nav class="nav" aria-label="Sections">(.*?)</nav>', html)
        assert nav is not None, path
        assert 'href="/"' in nav.group(1) and 'href="/battles"' in nav.group(1), path
        marked = re.findall(r'aria-current="page">(\w+)</a>', nav.group(1))
        assert marked == ([current] if current else []), (path, marked)
