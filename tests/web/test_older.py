"""Older pages of a filtered feed (killboard/web/older.py): every match, once, newest first, from
the kill rows alone; a rare filter's page looks through a bounded number of rows and goes on."""

from __future__ import annotations

import asyncio
import html as html_lib
import re
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
import ujson
from battlefights import FIGHTS, fight, post_all
from conftest import Client
from test_pages import post, row_ids

from killboard.kill.topics import kill_facts
from killboard.storage import participants
from killboard.web import filters, older, pages
from killboard.web.keys import reads_key, static_key, store_key
from killboard.web.recent import PAGE_KINDS

T = TypeVar("T")


async def post_everything(client: Client, killmails: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The 82 real kills and the three real fights, stored; returns them as the server renders them."""
    await post(client, killmails)
    for system in FIGHTS:
        await post_all(client, fight(system))
    store = client.server.app[store_key]
    ids = [i for (i,) in sqlite3.connect(store.path).execute("SELECT killmail_id FROM kills")]
    return [ujson.loads(k.body) for k in await store.many(ids)]


async def test_a_kills_rows_give_the_keys_of_the_kill_itself(client: Client, killmails: list[dict[str, Any]]) -> None:
    rendered = {k["killmail_id"]: k for k in await post_everything(client, killmails)}
    static = client.server.app[static_key]
    db = sqlite3.connect(client.server.app[store_key].path)
    rows = db.execute(
        "SELECT k.killmail_id, k.system_id, k.total_value, p.pilots FROM kills k JOIN participants p USING (seq)"
    ).fetchall()
    assert len(rows) == len(rendered) == 877
    kinds: Counter[str] = Counter()
    for killmail_id, system_id, value, blob in rows:
        want = frozenset(k for k in kill_facts(rendered[killmail_id]).keys if k[0] in PAGE_KINDS)
        pilots = participants.unpack(blob)
        assert older.row_keys(system_id, value, pilots, static) == want, killmail_id
        for named in ({"topic"}, {"alliance", "topic"}, {"ship"}, {"group", "system"}):  # what a filter names
            assert kinds_of(older.row_keys(system_id, value, pilots, static, named), named) == kinds_of(want, named)
        kinds.update(key[1] for key in want if key[0] == "topic")
    assert {"solo", "npc", "nullsec", "lowsec", "highsec", "5b", "10b"} <= set(kinds)  # each one tried


def kinds_of(keys: frozenset[Any], kinds: set[str]) -> frozenset[Any]:
    return frozenset(k for k in keys if k[0] in kinds)


def older_link(page: str) -> str:
    found = re.search(r'<a href="([^"]+)" rel="next">Older', page)
    return html_lib.unescape(found.group(1)) if found else ""


@pytest.mark.parametrize("memory", [1000, 100])  # the newest kills' keys: all of them, or fewer
@pytest.mark.parametrize("scan", [older.SCAN, 60])  # rows an older page looks at: plenty, or few
async def test_a_filter_pages_back_through_every_match_once(
    make_client: Any, killmails: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, memory: int, scan: int
) -> None:
    monkeypatch.setattr(pages, "FILTER_SCAN", memory)
    monkeypatch.setattr(older, "SCAN", scan)
    client = await make_client()
    kills = await post_everything(client, killmails)
    scan_limited = False
    for query in ("sec=nullsec", "solo=1", "npc=1", "class=frigates", "alliance=99003581", "min=5b&sec=nullsec"):
        wanted = filters.from_query(dict(pair.split("=") for pair in query.split("&")))
        expected = sorted((k["killmail_id"] for k in kills if wanted.matches(k)), reverse=True)
        url, seen, views = f"/?{query}", [], 0
        while url:
            resp = await client.get(url)
            assert resp.status == 200, (url, await resp.text())
            page = await resp.text()
            ids = row_ids(page)
            assert len(ids) <= pages.INITIAL_ROWS and ids == sorted(ids, reverse=True), url
            if views:
                assert 'data-live="off"' in page and f'href="/?{html_lib.escape(query)}">← Newest' in page
                looked = f"Looked through {scan:,} kills before #" in page
                assert looked == (len(ids) < pages.INITIAL_ROWS and bool(older_link(page))), url
                scan_limited |= looked
            seen += ids
            url, views = older_link(page), views + 1
            assert views < 100, query
        assert seen == expected, query
        assert expected, query  # each filter has matches among the real kills
    if scan < 877:  # the budget ran out on some page, which said so and went on
        assert scan_limited


async def test_an_older_filtered_page_refuses_a_bad_before(client: Client, killmails: list[dict[str, Any]]) -> None:
    await post(client, killmails)
    assert (await client.get("/?solo=1&before=x")).status == 400
    assert (await client.get("/?solo=1&before=" + "9" * 5000)).status == 400
    empty = await client.get("/?solo=1&before=5")
    assert empty.status == 200 and "No older kills" in await empty.text()


class Overlap:
    """How many calls of the wrapped functions ran at once, at most (in the server's threads)."""

    def __init__(self) -> None:
        self.running = self.most = 0
        self._lock = threading.Lock()

    def wrap(self, real: Callable[..., T]) -> Callable[..., T]:
        def counted(*args: Any) -> T:
            with self._lock:
                self.running += 1
                self.most = max(self.most, self.running)
            time.sleep(0.02)  # long enough for the others to pile up
            try:
                return real(*args)
            finally:
                with self._lock:
                    self.running -= 1

        return counted


async def test_older_pages_asked_at_once_take_turns_in_the_render_slots(
    client: Client, killmails: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twelve distinct older pages at once (a crawler, or someone hostile): at most the server's
    render slots test kill rows or render kills at a time, the rest wait, and every page is answered."""
    await post(client, killmails)
    top = max(k["killmail_id"] for k in killmails)
    # Filtered older pages test their rows in the slots; the unfiltered ones render their kills there.
    for query, module, name in (("solo=1&", older, "_matching"), ("", pages, "_render_rows")):
        overlap = Overlap()
        monkeypatch.setattr(module, name, overlap.wrap(getattr(module, name)))
        answers = await asyncio.gather(*(client.get(f"/?{query}before={top - n}") for n in range(12)))
        assert [a.status for a in answers] == [200] * 12
        assert overlap.most == client.server.app[reads_key].renders == 2, name
