"""No variant amplification (issue 22): however many different `lang` subsets and deflate windows
clients ask for, the hub makes a bounded number of frames per kill (the canonical variants of
langs.covering, each plain and deflated per canonical window at most once), and every client
still gets names in at least the languages it asked for."""

from __future__ import annotations

import asyncio
import json
from itertools import combinations
from typing import Any

import aiohttp
from conftest import Client, settle
from test_bounds import post as post_one
from test_bounds import with_attackers
from test_wire import _same_but_names, collect
from test_ws import subscribe

from killboard.kill.langs import covering
from killboard.kill.staticdata import LANGUAGES
from killboard.live import wire
from killboard.live.hub import WHOLE_LATE_BYTES
from killboard.web.keys import hub_key

# Every subset of the eight languages but none and all: 254, as in the issue.
SUBSETS = [c for n in range(1, len(LANGUAGES)) for c in combinations(LANGUAGES, n)]
# English, English and one other, all: the most language variants a kill may have.
CANONICAL = 2 + len(LANGUAGES) - 1


def test_covering_is_canonical_small_and_covers() -> None:
    assert len(SUBSETS) == 254
    canonical = {covering(s) for s in SUBSETS} | {covering(None)}
    assert len(canonical) == CANONICAL
    for subset in SUBSETS:
        got = covering(subset)
        assert got is None or set(subset) <= set(got)
    assert covering(("de",)) == covering(("de", "en")) == ("en", "de")
    assert covering(("en",)) == ("en",)


def test_deflate_windows_are_rounded_down_to_a_few() -> None:
    """A client may pick any server_max_window_bits from 9 to 15: it is answered with one of three."""
    windows = {wire.negotiate(f"permessage-deflate; server_max_window_bits={n}")[0] for n in range(9, 16)}
    assert windows == set(wire.WINDOWS)
    bits, answer = wire.negotiate("permessage-deflate; server_max_window_bits=14")
    assert bits == 12 and answer is not None and answer.endswith("server_max_window_bits=12")


async def test_254_language_subsets_make_a_bounded_number_of_variants(
    client: Client, killmails: list[dict[str, Any]]
) -> None:
    hub = client.server.app[hub_key]
    # A session of its own: the test client's allows 100 connections, and sockets keep theirs.
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    full = await session.ws_connect(client.make_url("/ws"), compress=0, max_msg_size=0)
    await subscribe(full)
    sockets: list[tuple[tuple[str, ...], aiohttp.ClientWebSocketResponse]] = []
    for i, subset in enumerate(SUBSETS):
        # Half offer permessage-deflate, half do not: both kinds of frame for every variant.
        url = client.make_url(f"/ws?lang={','.join(reversed(subset))}")
        ws = await session.ws_connect(url, compress=15 if i % 2 else 0)
        await subscribe(ws)
        sockets.append((subset, ws))
    by_size = sorted(killmails, key=lambda km: len(json.dumps(km)))
    # A fleet fight (the largest real kill, 400 real attackers: it goes out in slices to every
    # socket), the largest real kill (its variants are made in a thread), the smallest (on the loop).
    pool = [a for km in killmails for a in km["attackers"]]
    fight = {**with_attackers(by_size[-1], pool, 400), "killmail_id": by_size[-1]["killmail_id"] + 10**9}
    for km in (fight, by_size[-1], by_size[0]):
        before = hub.variants_made
        assert (await post_one(client, km)).status == 202
        await settle(client)
        [whole] = await collect(full, 1)
        if km is fight:
            assert len(json.dumps(whole["data"])) >= WHOLE_LATE_BYTES
        got = await asyncio.gather(*(collect(ws, 1) for _, ws in sockets))
        made = hub.variants_made - before
        # Nine language variants, each plain and deflated once: not one (or two) per socket.
        assert 0 < made <= 2 * CANONICAL, f"{made} frames made for one kill"
        for (subset, _), [kill] in zip(sockets, got, strict=True):
            assert kill["seq"] == whole["seq"]
            _same_but_names(whole["data"], kill["data"], covering(subset) or LANGUAGES)
            _covers(whole["data"], kill["data"], subset)
    for _, ws in sockets:
        await ws.close()
    await full.close()
    await session.close()


def _covers(whole: Any, cut: Any, langs: tuple[str, ...]) -> None:
    """Every name the full kill has in one of `langs` is in the client's frame."""
    if isinstance(whole, dict) and "en" in whole and set(whole) <= set(LANGUAGES):
        assert {k for k in langs if k in whole} <= set(cut), (langs, cut)
    elif isinstance(whole, dict):
        for key in whole:
            _covers(whole[key], cut[key], langs)
    elif isinstance(whole, list):
        for a, b in zip(whole, cut, strict=True):
            _covers(a, b, langs)
