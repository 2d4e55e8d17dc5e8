"""Entity kills lists, search, the CLI rebuild and imports, through the real app and command line."""

from __future__ import annotations

import io
import json
import re
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from battlefights import FIGHTS, fight
from battlefights import post_all as post_fight
from conftest import AUTH, Client, settle
from test_entity_figures import busiest, tables

from killboard.config import PROJECT_ROOT, Config
from killboard.entities import backlog, entities_key, figures
from killboard.entities.service import KINDS
from killboard.ingest.importer import run_import
from killboard.web.keys import static_key, store_key


async def post_all(client: Client, killmails: list[dict[str, Any]]) -> None:
    resp = await client.post("/api/killmails", json=killmails, headers=AUTH)
    assert resp.status == 202
    await settle(client)


async def test_kills_and_losses_lists_page_newest_first(client: Client, killmails: list[dict[str, Any]]) -> None:
    await post_all(client, killmails)
    corporation = busiest(killmails, "corporation_id")
    want_kills = {
        k["killmail_id"] for k in killmails if any(a.get("corporation_id") == corporation for a in k["attackers"])
    }
    want_losses = {k["killmail_id"] for k in killmails if k["victim"].get("corporation_id") == corporation}
    for role, want in (("kill", want_kills), ("loss", want_losses)):
        got: list[dict[str, Any]] = []
        cursor = ""
        while True:
            body = await (await client.get(f"/api/corporation/{corporation}/kills?role={role}&limit=2{cursor}")).json()
            got += body["kills"]
            if body["next_cursor"] is None:
                break
            cursor = f"&cursor={body['next_cursor']}"
        assert {k["killmail_id"] for k in got} == want, role
        seqs = [k["seq"] for k in got]
        assert seqs == sorted(seqs, reverse=True) and len(set(seqs)) == len(seqs)
    both = await (await client.get(f"/api/corporation/{corporation}/kills?limit=200")).json()
    assert {k["killmail_id"] for k in both["kills"]} == want_kills | want_losses


async def test_the_feeds_filters_apply_to_an_entitys_kills(client: Client, killmails: list[dict[str, Any]]) -> None:
    await post_all(client, killmails)
    every = await (await client.get("/api/killmails?limit=500")).json()
    by_region = Counter(k["region_id"] for k in every["killmails"])
    region_id = by_region.most_common(1)[0][0]
    in_region = [k for k in every["killmails"] if k["region_id"] == region_id]
    for query, test in (
        ("solo=1", lambda k: k["is_solo"]),
        ("npc=1", lambda k: k["is_npc"]),
        ("min=5b", lambda k: k["total_value"] >= 5e9),
        ("sec=" + in_region[0]["security_class"], lambda k: k["security_class"] == in_region[0]["security_class"]),
    ):
        body = await (await client.get(f"/api/region/{region_id}/kills?{query}&limit=200")).json()
        assert {k["killmail_id"] for k in body["kills"]} == {k["killmail_id"] for k in in_region if test(k)}, query


@pytest.mark.parametrize(
    ("path", "status", "words"),
    [
        ("/api/character/abc", 400, "character id must be an integer"),
        ("/api/character/0", 400, "from 1 to"),
        ("/api/character/99999999999999999999", 400, "from 1 to"),
        ("/api/character/" + "9" * 5000, 400, "from 1 to"),
        ("/api/character/%C2%B2", 400, "from 1 to"),
        ("/api/character/123/kills?limit=" + "9" * 5000, 400, "limit: must be an integer"),
        ("/api/character/123", 404, "not known here"),
        ("/api/character/123/kills?role=victim", 400, "role: must be kill or loss"),
        ("/api/character/123/kills?limit=0", 400, "limit: must be an integer"),
        ("/api/character/123/kills?cursor=-4", 400, "cursor: must be an integer"),
        ("/api/character/123/kills?min=7b", 400, "min: must be one of"),
        ("/api/character/123/kills?solo=maybe", 400, "solo: must be 1 or 0"),
        ("/api/search?q=", 400, "q: give"),
        ("/api/search?q=" + "a" * 101, 400, "at most 100"),
        ("/api/search?q=Rifter&limit=x", 400, "limit: must be"),
    ],
)
async def test_bad_input_is_a_precise_4xx(client: Client, path: str, status: int, words: str) -> None:
    resp = await client.get(path)
    assert resp.status == status
    assert words in (await resp.json())["error"]


async def test_search_is_prefix_case_insensitive_exact_first_and_multilingual(
    client: Client, killmails: list[dict[str, Any]]
) -> None:
    await post_all(client, killmails)

    async def search(q: str, lang: str = "en") -> list[dict[str, Any]]:
        resp = await client.get("/api/search", params={"q": q, "lang": lang})
        assert resp.status == 200
        return list((await resp.json())["results"])

    first = (await search("jita"))[0]
    assert (first["kind"], first["name"], first["url"]) == ("system", "Jita", "/system/30000142")
    rifter = await search("RIFTER")
    assert rifter[0]["name"] == "Rifter" and rifter[0]["kind"] == "ship"  # exact first
    assert all(r["name"].casefold().startswith("rifter") for r in rifter)
    # The reader's language as well as English: Caldari Navy's German name finds the same thing.
    german = await search("Ibis", "de")
    assert german and german[0]["kind"] == "ship"
    assert any(r["kind"] == "group" for r in await search("Frigate"))
    # Player names stored with kills carry no category: the kind comes from CCP's id ranges, or
    # for ids given before 2010, from the participant index.
    old_corp = next(
        a["corporation_id"]
        for k in killmails
        for a in k["attackers"]
        if 100_000_000 <= a.get("corporation_id", 0) < 2e9
    )
    db = sqlite3.connect(client.server.app[store_key].path)
    db.executemany(
        "INSERT INTO names (id, name, category, updated_at) VALUES (?, ?, '', ?)",
        [(95000001, "Kestrel Pilotname", time.time()), (old_corp, "Kestrel Old Corp", time.time())],
    )
    db.commit()
    db.close()
    await client.server.app[entities_key].refresh_names()
    found = {(r["kind"], r["id"]) for r in await search("kESTREL")}
    assert {("character", 95000001), ("corporation", old_corp), ("ship", 602)} <= found


async def test_search_learns_names_as_they_arrive(client: Client, killmails: list[dict[str, Any]]) -> None:
    store = client.server.app[store_key]
    await store.save_names({2112345678: ("Zyxwv Quokka", "character")})
    entities = client.server.app[entities_key]
    await entities.refresh_names()
    body = await (await client.get("/api/search?q=zyxwv")).json()
    assert body["results"] == [
        {"kind": "character", "id": 2112345678, "name": "Zyxwv Quokka", "url": "/character/2112345678"}
    ]
    await store.save_names({2112345678: ("Zyxwv Renamed", "character")})
    await entities.refresh_names()
    body = await (await client.get("/api/search?q=zyxwv")).json()
    assert [r["name"] for r in body["results"]] == ["Zyxwv Renamed"]


async def test_search_form_without_javascript_opens_the_match_or_lists_them(client: Client) -> None:
    resp = await client.get("/search?q=jita", allow_redirects=False)  # exactly one name is "Jita"
    assert resp.status == 302 and resp.headers["Location"] == "/system/30000142"
    assert (await client.get("/search?q=qqqqqqqq")).status == 404
    # "serp": a system and two NPC corporations, none named just that: all of them, listed.
    found = (await (await client.get("/api/search?q=serp")).json())["results"]
    assert len(found) >= 3 and {r["kind"] for r in found} >= {"system", "corporation"}
    resp = await client.get("/search?q=serp", allow_redirects=False)
    assert resp.status == 200
    page = await resp.text()
    assert all(f'<a href="{r["url"]}">{r["name"]}</a>' in page for r in found), page
    # Names from outside, and what was typed, are shown as text.
    store, entities = client.server.app[store_key], client.server.app[entities_key]
    await store.save_names({2112345678: ("<b>Serp</b>", "character"), 2112345679: ("<b>Serpent", "character")})
    await entities.refresh_names()
    page = await (await client.get("/search", params={"q": "<b>serp"})).text()
    assert "<b>" not in page and "&lt;b&gt;Serp&lt;/b&gt;" in page and "&lt;b&gt;Serpent" in page
    assert "&lt;b&gt;serp" in page  # the heading


async def test_entity_page_renders_figures_kills_and_links(client: Client, killmails: list[dict[str, Any]]) -> None:
    await post_all(client, killmails)
    character = busiest(killmails, "character_id")
    html = await (await client.get(f"/character/{character}")).text()
    figures = await (await client.get(f"/api/character/{character}")).json()
    assert f'data-channel="character:{character}"' in html
    assert f'<dd data-figure="kills">{figures["kills"]:,}</dd>' in html
    assert html.count('class="kill') >= min(50, figures["kills"] + figures["losses"])
    assert 'href="/system/' in html and 'href="/character/' in html
    assert (await client.get("/character/123")).status == 404
    assert (await client.get("/character/x")).status == 404  # not a kind/id page at all
    # The feed links names to their pages.
    feed = await (await client.get("/")).text()
    assert 'href="/character/' in feed and 'href="/system/' in feed and "/?character=" not in feed


async def test_an_entity_pages_back_through_all_its_kills(client: Client) -> None:
    """A real fight's alliance (in more than a page of kills): "Older →" walks back a page at a
    time, every kill of it once, newest first; older pages are history, not followed live."""
    kills = fight("30001155")
    await post_fight(client, kills)
    alliance = 1354830081
    mine = {
        k["killmail_id"] for k in kills if alliance in {p.get("alliance_id") for p in (k["victim"], *k["attackers"])}
    }
    assert len(mine) > 2 * 50
    url, pages, seen = f"/alliance/{alliance}", 0, []
    while url:
        html = await (await client.get(url)).text()
        rows = re.findall(r'<li class="kill[^"]*" data-id="(\d+)" data-seq="(\d+)"', html)
        assert 0 < len(rows) <= 50
        seqs = [int(seq) for _, seq in rows]
        assert seqs == sorted(seqs, reverse=True)  # newest first
        seen += [int(i) for i, _ in rows]
        assert ('data-live="off"' in html) == (pages > 0) and ("← Newest" in html) == (pages > 0)
        older = re.search(r'<a href="(/alliance/\d+\?before=\d+)" rel="next">', html)
        url, pages = older.group(1) if older else "", pages + 1
    assert len(seen) == len(set(seen)) and set(seen) == mine and pages == -(-len(mine) // 50)
    resp = await client.get(f"/alliance/{alliance}?before=x")
    assert resp.status == 400 and "before: must be an integer" in await resp.text()


@pytest.mark.parametrize(("role", "channel"), [("kill", "attacker"), ("loss", "victim")])
async def test_the_kills_and_losses_tabs_page_back_through_their_own(client: Client, role: str, channel: str) -> None:
    kills = fight("30001155")
    await post_fight(client, kills)
    alliance = 1354830081

    def side(k: dict[str, Any]) -> list[dict[str, Any]]:
        return k["attackers"] if role == "kill" else [k["victim"]]

    mine = {k["killmail_id"] for k in kills if any(p.get("alliance_id") == alliance for p in side(k))}
    assert len(mine) > 50
    url, seen, pages = f"/alliance/{alliance}?role={role}", [], 0
    while url:
        html = await (await client.get(url)).text()
        assert f'data-channel="{channel}.{alliance}"' in html
        assert f'<a href="/alliance/{alliance}?role={role}" aria-current="page">' in html
        seen += [int(i) for i in re.findall(r'<li class="kill[^"]*" data-id="(\d+)"', html)]
        older = re.search(r'<a href="(/alliance/\d+\?role=\w+&amp;before=\d+)" rel="next">', html)
        url, pages = unescape(older.group(1)) if older else "", pages + 1
    assert len(seen) == len(set(seen)) and set(seen) == mine and pages > 1
    assert 'class="tabs"' not in await (await client.get("/ship/12011")).text()  # no side channel for a ship
    resp = await client.get(f"/ship/12011?role={role}")
    assert resp.status == 400 and "role: must be kill or loss" in await resp.text()


async def test_an_npc_corporation_is_named_from_the_static_data(
    client: Client, killmails: list[dict[str, Any]]
) -> None:
    """ESI is never asked for an NPC corporation's name, so the names table never has it."""
    await post_all(client, killmails)
    static = client.server.app[static_key]
    npc = min(
        a["corporation_id"]
        for k in killmails
        for a in k["attackers"]
        if a.get("corporation_id") in static.npc_corporations
    )
    name = static.npc_corporations[npc].name
    assert (await (await client.get(f"/api/corporation/{npc}")).json())["name"] == name
    assert f"<title>{name} · killboard</title>" in await (await client.get(f"/corporation/{npc}")).text()
    found = (await (await client.get("/api/search", params={"q": name})).json())["results"]
    assert {"kind": "corporation", "id": npc, "name": name, "url": f"/corporation/{npc}"} in found


async def test_friendly_fire_is_no_alliance_its_own_opponent(client: Client) -> None:
    """In the three real fights, alliance 1354830081 killed its own pilots and lost ships to its
    own final blows: the rows count that, the top list of opponents does not (a Muninn killing
    a Muninn still makes Muninns a Muninn's opponent)."""
    kills = [k for system in FIGHTS for k in fight(system)]
    for system in FIGHTS:
        await post_fight(client, fight(system))
    alliance = 1354830081

    def final_blow(k: dict[str, Any]) -> dict[str, Any]:
        return next(a for a in k["attackers"] if a["final_blow"])

    own_victims = sum(
        1
        for k in kills
        if k["victim"].get("alliance_id") == alliance and any(a.get("alliance_id") == alliance for a in k["attackers"])
    )
    own_blows = sum(
        1 for k in kills if k["victim"].get("alliance_id") == alliance and final_blow(k).get("alliance_id") == alliance
    )
    [(own,)] = await client.server.app[store_key].query(
        "SELECT n FROM entity_tops WHERE kind = ? AND id = ? AND what = ? AND other = ?",
        (int(KINDS["alliance"]), alliance, figures.OPPONENT, alliance),
    )
    assert own == own_victims + own_blows > 0
    opponents = [
        row["id"] for row in (await (await client.get(f"/api/alliance/{alliance}")).json())["top"]["opponents"]
    ]
    assert opponents and alliance not in opponents
    muninn = 12015
    ship = (await (await client.get(f"/api/ship/{muninn}")).json())["top"]["opponents"]
    assert muninn in [row["id"] for row in ship]


async def test_rebuild_command_and_import_count_like_the_server(
    tmp_path: Path, killmails: list[dict[str, Any]], make_client: Any, config: Config
) -> None:
    client = await make_client()
    await post_all(client, killmails)
    want = tables(config.db_path)
    await client.close()
    # An import in its own process (here: its own store) with the figures attached.
    other = tmp_path / "imported.sqlite3"
    files = tmp_path / "in.jsonl"
    files.write_text("\n".join(json.dumps(k) for k in killmails))
    imported = Config(db_path=other, upstream=False)
    summary = await run_import(
        imported, [files], out=io.StringIO(), err=io.StringIO(), tty=False, prepare=[backlog.with_figures]
    )
    assert summary.imported == len(killmails)
    assert tables(other) == want
    # The command line: drop the figures by hand, rebuild puts them back.
    db = sqlite3.connect(other)
    db.execute("DELETE FROM entity_tops")
    db.commit()
    db.close()
    run = subprocess.run(
        [sys.executable, "app.py", "entities", "rebuild", "--db", str(other)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert f"rebuilt from {len(killmails)} kills" in run.stdout
    assert tables(other) == want


async def test_page_rows_show_names_once_learned_and_escape_them(
    client: Client, killmails: list[dict[str, Any]]
) -> None:
    esi = next(k for k in killmails if k["victim"].get("character_id"))
    victim = esi["victim"]["character_id"]
    await post_all(client, [esi])
    page = f"/corporation/{esi['victim']['corporation_id']}"
    assert f"#{victim}</a>" in await (await client.get(page)).text()  # ids until the name is known
    hostile = "<img src=x onerror=alert(1)>"
    await client.server.app[store_key].save_names({victim: (hostile, "character")})
    html = await (await client.get(page)).text()
    assert f"#{victim}</a>" not in html and hostile not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert hostile not in await (await client.get(f"/character/{victim}")).text()
