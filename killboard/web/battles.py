"""Battles over HTTP: `GET /api/battles`, `GET /api/battles/{id}`, and the pages `/battles` and
`/battle/{id}` (static/battles.js keeps them live over the WebSocket's battle channels)."""

from __future__ import annotations

import logging
import sqlite3
import time
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from ..battles import tables
from ..battles.detect import GAP
from ..battles.service import Battles
from ..kill.langs import reader_language
from ..logs import client
from ..numbers import MAX_ID, BadNumber, bounded_int, query_int
from .api import json_error
from .keptpages import EXPIRES
from .keys import battles_key, static_key, store_key
from .pages import render_page

log = logging.getLogger(__name__)

PAGE = 50  # battles a page at most
MAX_MOVES = 64  # `side.<id>=<n>` parameters at most
# The query names /api/battles reads (the view cache keeps a page by these: web/keptpages.py).
LIST_READS = ("cursor", "limit", "min_kills", "ongoing", "region", "system")


class BadQuery(ValueError):
    """A query parameter we cannot use; the message names it."""


def _int(query: Any, name: str, low: int = 1, high: int = MAX_ID) -> int | None:
    try:
        return query_int(query, name, low, high)
    except BadNumber as exc:
        raise BadQuery(str(exc)) from None


def _cursor(raw: str | None) -> tuple[int, int] | None:
    if not raw:
        return None
    start, _, battle_id = raw.partition("_")
    # Both fit SQLite's integers: a bigger one raised OverflowError in the query (a 500).
    when, number = bounded_int(start, 0, MAX_ID), bounded_int(battle_id, 0, MAX_ID)
    if when is None or number is None:
        raise BadQuery(f"cursor: expected the 'next' value of a previous page, got {raw[:40]!r}")
    return when, number


def _moves(query: Any) -> dict[int, int]:
    """`?side.<entity_id>=<n>`: move an entity to side n (from 1) for this view."""
    moves: dict[int, int] = {}
    for key, value in query.items():
        if not key.startswith("side."):
            continue
        if len(moves) >= MAX_MOVES:
            raise BadQuery(f"side.<id>: at most {MAX_MOVES} moves")
        entity = key[5:]
        entity_id, side = bounded_int(entity, 1, MAX_ID), bounded_int(value, 1, 64)
        if entity_id is None:
            raise BadQuery(f"{key[:60]!r}: expected side.<entity id>=<side number>")
        if side is None:
            raise BadQuery(f"{key[:60]}: expected a side number from 1 to 64, got {value[:20]!r}")
        moves[entity_id] = side
    return moves


async def list_battles(request: web.Request) -> web.StreamResponse:
    battles = request.app[battles_key]
    query = request.query
    try:
        system = _int(query, "system")
        region = _int(query, "region")
        min_kills = _int(query, "min_kills", 0, 1_000_000) or 0
        limit = _int(query, "limit", 1, PAGE) or PAGE
        ongoing = query.get("ongoing")
        if ongoing not in (None, "", "0", "1"):
            raise BadQuery(f"ongoing: expected 1 or 0, got {ongoing[:20]!r}")
        before = _cursor(query.get("cursor"))
    except BadQuery as exc:
        log.info("GET /api/battles: %s", exc, extra=client(request.remote))
        return json_error(400, str(exc))
    now = time.time()
    rows = await tables.listing(
        battles.store,
        limit,
        before,
        system,
        region,
        min_kills,
        int(now) - GAP if ongoing == "1" else None,
    )
    out = [await battles.summarize(row, now=now) for row in rows]
    next_cursor = f"{rows[-1].start_time}_{rows[-1].battle_id}" if len(rows) == limit else None
    response = web.json_response({"battles": out, "next": next_cursor})
    if (ends := _ends(rows, now)) is not None:
        response[EXPIRES] = ends
    return response


def _ends(rows: list[tables.BattleRow], now: float) -> float | None:
    """When the first of these battles stops being ongoing (a kept page is stale then), if any is."""
    return min((row.end_time + GAP for row in rows if row.ongoing(now)), default=None)


async def get_battle(request: web.Request) -> web.StreamResponse:
    battles = request.app[battles_key]
    raw = request.match_info["battle_id"]
    battle_id = bounded_int(raw, 1, MAX_ID)
    if battle_id is None:
        return json_error(400, f"battle id: expected a positive integer, got {raw[:40]!r}")
    try:
        moves = _moves(request.query)
    except BadQuery as exc:
        log.info("GET /api/battles/%s: %s", raw[:40], exc, extra=client(request.remote))
        return json_error(400, str(exc))
    row, merged_into = await battles.resolve(battle_id)
    if merged_into is not None:
        target = f"/api/battles/{merged_into}" + (f"?{request.query_string}" if request.query_string else "")
        raise web.HTTPPermanentRedirect(target)
    if row is None:
        return json_error(404, f"no battle {battle_id}: unknown, or its kills are past retention")
    data = await battles.summarize(row, moves, detail=True)
    data["names"] = await _names(request, data)
    return web.json_response(data)


async def _names(request: web.Request, data: dict[str, Any]) -> dict[str, str]:
    """Names of the battle's entities, ships and systems, for pages (shown as text, never HTML);
    ships and classes in the reader's language where the data has it."""
    static = request.app[static_key]
    lang = reader_language(request.headers.get("Accept-Language", ""))

    def type_name(type_id: int) -> str | None:
        info = static.types.get(type_id)
        if info is None:
            return None
        return static.type_names(type_id).get(lang) or info.name

    ids: set[int] = set()
    out: dict[str, str] = {}
    for side in data["sides"]:
        ids.update(e["id"] for e in side["entities"])
        for ship in side.get("ships", ()):
            if (name := type_name(ship["type_id"])) is not None:
                out[str(ship["type_id"])] = name
        for cls in side.get("classes", ()):
            group = static.groups.get(cls["group_id"])
            if group is not None:
                out[str(cls["group_id"])] = group.names.get(lang) or group.names.get("en", "")
    for entry in data.get("timeline", ()):
        if (name := type_name(entry["ship_type_id"])) is not None:
            out[str(entry["ship_type_id"])] = name
    for system_id in data["system_ids"]:
        system = static.systems.get(system_id)
        if system is not None:
            out[str(system_id)] = system.name
    out.update(await _entity_names(request, ids))
    return out


async def _entity_names(request: web.Request, ids: set[int]) -> dict[str, str]:
    """Names of alliances, corporations and factions: factions and NPC corporations (Serpentis,
    CONCORD …: ESI is never asked for them) from the static data, the rest as stored."""
    static = request.app[static_key]
    out: dict[str, str] = {}
    for entity_id in ids:
        if (faction := static.factions.get(entity_id)) is not None:
            out[str(entity_id)] = faction.names.get("en", "")
        elif (npc := static.npc_corporations.get(entity_id)) is not None:
            out[str(entity_id)] = npc.name
    known = await request.app[store_key].names(ids)
    out.update((str(i), n) for i, n in known.items())
    return out


async def list_page(request: web.Request) -> web.StreamResponse:
    """/battles: the newest PAGE battles, live; `?cursor=` (the API's `next`) the ones before."""
    battles = request.app[battles_key]
    try:
        before = _cursor(request.query.get("cursor"))
    except BadQuery as exc:
        log.info("GET /battles: %s", exc, extra=client(request.remote))
        return aiohttp_jinja2.render_template("notfound.html", request, {"message": str(exc)}, status=400)
    now = time.time()
    rows = await tables.listing(battles.store, PAGE + 1, before)  # one more: is there an older page
    older = f"{rows[PAGE - 1].start_time}_{rows[PAGE - 1].battle_id}" if len(rows) > PAGE else None
    rows = rows[:PAGE]
    static = request.app[static_key]
    items: list[dict[str, Any]] = []
    leading: set[int] = set()
    for row in rows:
        summary = await battles.summarize(row, now=now)
        system = static.systems.get(row.system_ids[0]) if row.system_ids else None
        # Each side by the alliance or corporation that brought the most pilots to it.
        leads = [side["entities"][0] for side in summary["sides"] if side["entities"]]
        leading.update(lead["id"] for lead in leads)
        items.append({"s": summary, "system": system.name if system else str(row.system_ids), "leads": leads})
    names = await _entity_names(request, leading)
    context = {
        "lang": reader_language(request.headers.get("Accept-Language", "")),
        "battles": items,
        "names": names,
        "older": older,
        "paged": before is not None,
        "last_seq": await battles.store.last_seq(),
    }
    response = await render_page("battles.html", request, context)
    response.headers["Cache-Control"] = "no-store"
    if (ends := _ends(rows, now)) is not None:
        response[EXPIRES] = ends
    return response


async def warm(battles: Battles) -> None:
    """Work out at start, in the background, the summaries `/battles` shows (the battles service
    keeps them by battle and last kill): the first view after a start would otherwise wait for
    50 battles' sides (~0.6 s for 20,000 kills). Later views recompute only a battle that grew."""
    now = time.time()
    try:
        for row in await tables.listing(battles.store, PAGE):
            await battles.summarize(row, now=now)
    except (sqlite3.Error, ValueError) as exc:
        log.warning("battles: working out the listing's summaries at start failed (%s); the first view does", exc)


async def battle_page(request: web.Request) -> web.StreamResponse:
    battles = request.app[battles_key]
    battle_id = int(request.match_info["battle_id"])
    row, merged_into = await battles.resolve(battle_id)
    if merged_into is not None:
        raise web.HTTPPermanentRedirect(f"/battle/{merged_into}")
    if row is None:
        return aiohttp_jinja2.render_template(
            "notfound.html", request, {"message": f"No battle {battle_id} is known here."}, status=404
        )
    data = await battles.summarize(row, detail=True)
    data["names"] = await _names(request, data)
    context = {
        "lang": reader_language(request.headers.get("Accept-Language", "")),
        "b": data,
        "names": data["names"],
    }
    response = await render_page("battle.html", request, context)
    response.headers["Cache-Control"] = "no-store"
    return response
