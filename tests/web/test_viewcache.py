"""Kept pages and rows (killboard/web/viewcache.py): a view nothing changed is answered from memory
(304 when the browser has it), and the next view after a new kill, a late name, a corrected body or
a prune shows it."""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from conftest import AUTH, Client, settle
from fakes import FakeEsi
from test_recent import count_renders, row_ids

from killboard.web.keys import names_key, store_key
from killboard.web.viewcache import MAX_ENTRY_SHARE, OVERHEAD, ViewCache


async def post(client: Client, body: Any) -> None:
    resp = await client.post("/api/killmails", data=json.dumps(body), headers=AUTH)
    assert resp.status == 202, await resp.text()
    await settle(client)


def row_of(html: str, killmail_id: int) -> str:
    match = re.search(rf'<li class="kill[^"]*" data-id="{killmail_id}".*?</li>', html, re.S)
    assert match, killmail_id
    return match.group(0)


async def test_an_unchanged_view_is_kept_and_a_new_kill_shows_on_the_next(
    client: Client, killmails: list[dict[str, Any]]
) -> None:
    await post(client, killmails[:30])
    renders = count_renders(client.server.app[store_key])
    first = await client.get("/")
    html = await first.text()
    assert len(row_ids(html)) == 30 and renders() == 30
    etag = first.headers["ETag"]
    assert first.headers["Cache-Control"] == "no-cache"

    again = await client.get("/")
    assert await again.text() == html and again.headers["ETag"] == etag
    assert renders() == 0  # nothing read: the kept page
    cached = await client.get("/", headers={"If-None-Match": etag})
    assert cached.status == 304 and await cached.read() == b""

    await post(client, killmails[30])
    after = await client.get("/", headers={"If-None-Match": etag})
    assert after.status == 200 and after.headers["ETag"] != etag
    assert row_ids(await after.text())[0] == max(km["killmail_id"] for km in killmails[:31])
    assert renders() == 1  # only the new kill's row was rendered


async def test_languages_and_filters_are_kept_apart(client: Client, killmails: list[dict[str, Any]]) -> None:
    await post(client, killmails)
    en = await (await client.get("/", headers={"Accept-Language": "en"})).text()
    de = await (await client.get("/", headers={"Accept-Language": "de"})).text()
    assert '<html lang="de">' in de and '<html lang="en">' in en and en != de
    assert await (await client.get("/", headers={"Accept-Language": "en"})).text() == en
    lowsec = await (await client.get("/?sec=lowsec")).text()
    both = sorted(set(row_ids(lowsec)) & set(row_ids(en)))
    assert both and row_ids(lowsec) != row_ids(en)
    # Rows link names to their entity pages, alike on every view; each view's page is its own.
    assert row_of(lowsec, both[0]) == row_of(en, both[0])
    assert f'href="/system/{next(k for k in killmails if k["killmail_id"] == both[0])["solar_system_id"]}"' in row_of(
        en, both[0]
    )
    assert await (await client.get("/?sec=lowsec")).text() == lowsec


async def test_a_corrected_body_shows_on_the_next_view(client: Client, killmails: list[dict[str, Any]]) -> None:
    km = next(k for k in killmails if len(k["attackers"]) > 3)
    await post(client, km)
    before = row_of(await (await client.get("/")).text(), km["killmail_id"])
    assert f"{len(km['attackers'])} attackers" in before
    store = client.server.app[store_key]
    esi = {k: v for k, v in km.items() if k != "zkb"}
    assert await store.rewrite(km["killmail_id"], {**esi, "attackers": km["attackers"][:2]}, km.get("zkb"))
    after = row_of(await (await client.get("/")).text(), km["killmail_id"])
    assert "2 attackers" in after


async def test_times_are_absolute_in_the_kept_html(client: Client, killmails: list[dict[str, Any]]) -> None:
    await post(client, killmails[0])
    html = await (await client.get("/")).text()
    assert " ago<" not in html and "just now" not in html
    assert re.search(r'<time datetime="[^"]+" title="[^"]+ UTC">[^<]+ UTC</time>', html)


async def test_a_late_name_shows_on_the_next_view(
    make_client: Callable[..., Awaitable[Client]], esi: tuple[FakeEsi, str], killmails: list[dict[str, Any]]
) -> None:
    """ESI is down when the kill arrives; the name filler patches the stored kill later: the next
    view of a page that was kept with the nameless row shows the name."""
    fake, url = esi
    fake.fail_status = 503
    client = await make_client(upstream=True, esi_url=url, r2z2_url="http://127.0.0.1:9", backoff_min=5.0)
    km = killmails[30]
    await post(client, km)
    name = f"Character {km['victim']['character_id']}"
    html = await (await client.get("/")).text()
    assert row_ids(html) == [km["killmail_id"]] and name not in html
    assert await (await client.get("/")).text() == html  # kept while nothing changes

    fake.fail_status = None
    assert await client.server.app[names_key].fill_pending() == 1
    assert name in row_of(await (await client.get("/")).text(), km["killmail_id"])


def test_the_cache_is_bounded_in_bytes_and_drops_rows_of_changed_kills() -> None:
    cache = ViewCache(max_bytes=10_000)
    for view in range(10):
        for n in range(5):
            cache.put_row("en", n, "x" * 500, cache.generation)
        cache.put_page((f"/?v={view}", "en"), cache.version(1), b"y" * 1000, cache.generation)
        assert cache.bytes <= 10_000
    # Rows are kept once per language whatever the views that show them: 5 rows, not 50.
    assert cache.rows == 5
    row, page = sys.getsizeof("x" * 500) + OVERHEAD, sys.getsizeof(b"y" * 1000) + OVERHEAD
    assert cache.bytes == 5 * row + len(cache) * page
    assert len(cache) < 10 and cache.page(("/?v=9", "en"), cache.version(1)) is not None
    assert cache.page(("/?v=0", "en"), cache.version(1)) is None  # least recently used went first
    cache.put_row("de", 3, "z" * 100, cache.generation)
    cache.changed([3])
    assert cache.page(("/?v=9", "en"), cache.version(1)) is None and len(cache) == 0
    assert cache.row("en", 3) is None and cache.row("de", 3) is None and cache.row("en", 4) is not None
    assert cache.bytes == 4 * row
    # A row counts the memory it holds: Japanese text takes more than its length in bytes.
    cache.put_row("ja", 9, "戦" * 500, cache.generation)
    assert cache.bytes == 4 * row + sys.getsizeof("戦" * 500) + OVERHEAD > 5 * row
    # Rows read before a change are not kept: the kill may have changed under them.
    stale = cache.generation
    cache.changed([1])
    cache.put_row("en", 1, "old", stale)
    cache.put_page(("/?v=1", "en"), (2, stale), b"page", stale)
    assert cache.row("en", 1) is None and len(cache) == 0


def test_one_big_answer_pushes_no_page_out() -> None:
    """A page past a quarter of the bound is served but not kept: it would push the others out."""
    cache = ViewCache(max_bytes=100_000)
    for view in range(8):
        cache.put_page((f"/?v={view}", "en"), cache.version(1), b"y" * 5_000, cache.generation)
    kept = cache.bytes
    big = cache.put_page(("/api/group/25/kills?limit=200", "en"), cache.version(1), b"z" * 30_000, cache.generation)
    assert big.body == b"z" * 30_000  # the caller still answers with it
    assert cache.page(("/api/group/25/kills?limit=200", "en"), cache.version(1)) is None
    assert cache.bytes == kept and all(
        cache.page((f"/?v={view}", "en"), cache.version(1)) is not None for view in range(8)
    )
    near = 100_000 // MAX_ENTRY_SHARE - OVERHEAD - 100  # just inside the share
    cache.put_page(("/battle/1", "en"), cache.version(1), b"b" * near, cache.generation)
    assert cache.page(("/battle/1", "en"), cache.version(1)) is not None


def test_a_page_kept_until_a_time_is_stale_after_it() -> None:
    cache = ViewCache()
    version = cache.version(7, "battle")
    cache.put_page(("/battles", "en"), version, b"a", cache.generation, expires=time.time() + 60)
    assert cache.page(("/battles", "en"), version) is not None
    cache.put_page(("/battles", "en"), version, b"b", cache.generation, expires=time.time() - 1)
    assert cache.page(("/battles", "en"), version) is None


async def test_a_name_saved_for_another_kill_shows_in_a_kept_row(
    client: Client, killmails: list[dict[str, Any]]
) -> None:
    """A stored kill renders player names from the names table: when a later kill's lookup saves
    a name, the kept row that showed that pilot nameless is rendered again."""
    km = killmails[5]
    await post(client, km)
    victim = km["victim"]["character_id"]
    html = await (await client.get("/")).text()
    assert "Late Name" not in html
    await client.server.app[store_key].save_names({victim: ("Late Name", "character")})
    assert "Late Name" in row_of(await (await client.get("/")).text(), km["killmail_id"])
