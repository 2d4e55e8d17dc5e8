"""HTTP handlers: the entity page, its figures and kills as JSON, and name search."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import aiohttp_jinja2
from aiohttp import web
from markupsafe import Markup

from ..kill import topics
from ..kill.display import nameless
from ..kill.frames import encode
from ..kill.langs import reader_language
from ..logs import client
from ..numbers import MAX_ID, BadNumber, bounded_int, query_int
from ..storage.participants import KIND_NAMES
from . import figures, rows
from .service import Entities

log = logging.getLogger(__name__)

KIND_PATTERN = "|".join(KIND_NAMES)
DEFAULT_LIMIT = 50
MAX_LIMIT = 200
PAGE_ROWS = 50
ROLES = ("kill", "loss")
# Pages with Kills and Losses tabs: the kinds a channel follows by side (`attacker.ID`, `victim.ID`).
TABBED = ("character", "corporation", "alliance")
# The feed's filters (web/filters.py): query parameter -> the topics it may name.
VALUE_FLOORS = ("5b", "10b")
SECURITY = ("highsec", "lowsec", "nullsec", "wspace", "abyssal", "pochven")

entities_key = web.AppKey("entities", Entities)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status, dumps=lambda o: encode(o).decode())


def _entity(request: web.Request) -> tuple[str, int] | str:
    """(kind, id) of the route, or the message of a 400."""
    kind, raw = request.match_info["kind"], request.match_info["id"]
    entity_id = bounded_int(raw, 1, MAX_ID)
    if entity_id is None:
        return f"{kind} id must be an integer from 1 to {MAX_ID}, got {raw[:40]!r}"
    return kind, entity_id


def _condition(request: web.Request) -> topics.Condition | str | None:
    """The feed's filters of the query as a channel condition; None for none; a str: the 400."""
    q = request.query
    parts: list[str] = []
    for name, allowed in (("min", VALUE_FLOORS), ("sec", SECURITY), ("class", tuple(topics.SHIP_GROUP_TOPICS))):
        value = q.get(name, "")
        if value:
            if value not in allowed:
                return f"{name}: must be one of {', '.join(allowed)}, got {value[:40]!r}"
            parts.append(value)
    for name in ("solo", "npc"):
        value = q.get(name, "")
        if value in ("1", "true", "on"):
            parts.append(name)
        elif value not in ("", "0", "false", "off"):
            return f"{name}: must be 1 or 0, got {value[:40]!r}"
    return topics.parse("&".join(parts)) if parts else None


def _lang(request: web.Request) -> str:
    lang = request.query.get("lang", "")
    return (
        lang
        if lang in ("en", "de", "es", "fr", "ja", "ko", "ru", "zh")
        else reader_language(request.headers.get("Accept-Language", ""))
    )


async def api_figures(request: web.Request) -> web.Response:
    """GET /api/{kind}/{id}: kills, losses, ISK, efficiency, solo, months, top lists."""
    entity = _entity(request)
    if isinstance(entity, str):
        log.info("GET %s -> 400 %s", request.path[:120], entity, extra=client(request.remote))
        return _error(400, entity)
    found = await request.app[entities_key].figures(*entity, _lang(request))
    if found is None:
        return _error(404, f"{entity[0]} {entity[1]} is not known here: no stored kill names it")
    return web.json_response(found, dumps=lambda o: encode(o).decode(), headers={"Cache-Control": "no-cache"})


async def api_kills(request: web.Request) -> web.Response:
    """GET /api/{kind}/{id}/kills?role=kill|loss&cursor=SEQ&limit=N and the feed's filters."""
    entity = _entity(request)
    role = request.query.get("role") or None
    condition = _condition(request)
    problem = entity if isinstance(entity, str) else condition if isinstance(condition, str) else None
    if problem is None and role not in (None, "kill", "loss"):
        problem = f"role: must be kill or loss, got {role[:40]!r}"
    limit = _bounded(request, "limit", DEFAULT_LIMIT, MAX_LIMIT)
    cursor = _bounded(request, "cursor", None, MAX_ID)
    for value in (limit, cursor):
        if problem is None and isinstance(value, str):
            problem = value
    if problem is not None:
        log.info("GET %s -> 400 %s", request.path[:120], problem, extra=client(request.remote))
        return _error(400, problem)
    assert not isinstance(entity, str) and not isinstance(condition, str)
    assert isinstance(limit, int) and not isinstance(cursor, str)
    rows, next_cursor = await request.app[entities_key].kills(*entity, role, cursor, limit, condition)
    body = b'{"kills":[' + b",".join(body for _, body, _ in rows) + b'],"next_cursor":'
    body += (b"%d" % next_cursor if next_cursor is not None else b"null") + b"}"
    return web.Response(body=body, content_type="application/json")


def _bounded(request: web.Request, name: str, default: int | None, high: int) -> int | str | None:
    try:
        return query_int(request.query, name, 1, high, default)
    except BadNumber as exc:
        return str(exc)


async def api_search(request: web.Request) -> web.Response:
    """GET /api/search?q=PREFIX[&limit=N]: names, exact matches first."""
    q = request.query.get("q", "")
    if not q.strip():
        return _error(400, "q: give the first letters of a name")
    if len(q) > 100:
        return _error(400, f"q: at most 100 characters, got {len(q)}")
    limit = _bounded(request, "limit", 10, 50)
    if isinstance(limit, str):
        return _error(400, limit)
    assert limit is not None
    found = request.app[entities_key].index.search(q, _lang(request), limit)
    results = [{"kind": e.kind, "id": e.id, "name": e.name, "url": _url(e.kind, e.id)} for e in found]
    return web.json_response({"q": q, "results": results}, dumps=lambda o: encode(o).decode())


def _url(kind: str, entity_id: int) -> str:
    # A constellation has no page of its own: its name leads to the feed filtered by it.
    return f"/?constellation={entity_id}" if kind == "constellation" else f"/{kind}/{entity_id}"


SEARCH_PAGE_ROWS = 50


async def search_page(request: web.Request) -> web.StreamResponse:
    """GET /search?q=: the search box without a pick (Enter on what was typed, or no JavaScript).
    One match, or one name that is exactly what was typed, opens its page; several list them all
    ("serp": a system and two NPC corporations), rather than opening the first."""
    q = request.query.get("q", "")[:100]
    lang = _lang(request)
    found = request.app[entities_key].index.search(q, lang, SEARCH_PAGE_ROWS) if q.strip() else []
    if not found:
        return aiohttp_jinja2.render_template(
            "notfound.html",
            request,
            {"message": f"No name starts with {q!r}." if q else "Type a name to search."},
            status=404,
        )
    key = " ".join(q.split()).casefold()
    exact = [e for e in found if e.key == key]
    if len(found) == 1 or len(exact) == 1:
        best = exact[0] if exact else found[0]
        raise web.HTTPFound(_url(best.kind, best.id))
    results = [{"kind": e.kind, "name": e.name, "url": _url(e.kind, e.id)} for e in found]
    return aiohttp_jinja2.render_template(
        "search.html", request, {"q": q, "results": results, "more": len(found) == SEARCH_PAGE_ROWS, "lang": lang}
    )


def link(kind: str, entity_id: Any) -> str:
    """Where a name links: its page."""
    return f"/{kind}/{int(entity_id)}" if entity_id else "/"


async def page(request: web.Request) -> web.StreamResponse:
    """GET /{kind}/{id}: the figures, the newest kills and losses, live over the entity's channel;
    `?before=SEQ`: the page of older ones before that kill, not followed live."""
    entity = _entity(request)
    service = request.app[entities_key]
    lang = reader_language(request.headers.get("Accept-Language", ""))
    before = _bounded(request, "before", None, MAX_ID)
    role = request.query.get("role") or None
    problem = before if isinstance(before, str) else None
    tabbed = not isinstance(entity, str) and entity[0] in TABBED
    if problem is None and role is not None and (role not in ROLES or not tabbed):
        problem = f"role: must be kill or loss, on a character, corporation or alliance page; got {role[:40]!r}"
    if problem is not None:
        log.info("GET %s -> 400 %s", request.path[:120], problem, extra=client(request.remote))
        return aiohttp_jinja2.render_template("notfound.html", request, {"message": problem}, status=400)
    assert not isinstance(before, str)
    found = None if isinstance(entity, str) else await service.figures(*entity, lang)
    if found is None or isinstance(entity, str):
        message = entity if isinstance(entity, str) else f"Nothing is known here of {entity[0]} {entity[1]} (yet)."
        return aiohttp_jinja2.render_template("notfound.html", request, {"message": message}, status=404)
    assert service.store is not None
    last_seq = await service.store.last_seq()  # first: a kill stored meanwhile is replayed, not lost
    kept = service.html
    generation = kept.generation  # before the rows are read: a row read while a kill changed is not kept
    seqs, older = await service.page_seqs(*entity, role, before, PAGE_ROWS)
    kills = await rows.rows(service.store, service.static, seqs, lang, service.pilots)
    env = aiohttp_jinja2.get_env(request.app)
    known = {k["killmail_id"]: html for k in kills if (html := kept.row(lang, k["killmail_id"], "entity")) is not None}
    fresh = [k for k in kills if k["killmail_id"] not in known]

    def render_rows() -> dict[int, str]:
        """The rows not kept yet, in a thread (a template run each: ~0.3 ms a row)."""
        kill_row = env.get_template("macros.html").module.kill_row  # type: ignore[attr-defined]
        return {k["killmail_id"]: str(kill_row(k, link)) for k in fresh}

    for kill_id, html in (await asyncio.to_thread(render_rows) if fresh else {}).items():
        known[kill_id] = html
        kept.put_row(lang, kill_id, html, generation, "entity")
    for kill in fresh:
        if missing := nameless(kill):
            kept.waiting_for_names(kill["killmail_id"], missing)
    # Rendered by the autoescaping template: names are escaped.
    rendered = [Markup(known[k["killmail_id"]]) for k in kills]
    context = {
        "lang": lang,
        "e": found,
        "kind": entity[0],
        "label": found["name"] or f"{entity[0].capitalize()} #{entity[1]}",
        "rows": rendered,
        "older": older,
        "paged": before is not None,
        "role": role,
        "tabbed": tabbed,
        # A tab follows its own channel: the entity among the attackers, or the victim's.
        "channel": {None: found["channel"], "kill": f"attacker.{entity[1]}", "loss": f"victim.{entity[1]}"}[role],
        "last_seq": last_seq,
        "max_rows": PAGE_ROWS * 4,
        "link": link,
        "top_titles": {
            "ships_flown": "Ships flown",
            "ships_lost": "Ships lost",
            "systems": "Systems",
            "opponents": "Top opponents" if entity[0] not in ("system", "region") else "Top attacking alliances",
        },
        "now": time.time(),
        "this_month": time.strftime("%Y-%m", time.gmtime()),
        "quote": quote,
        "figures_url": f"/api/{entity[0]}/{entity[1]}",
        "TOP_NAMES": figures.TOP_NAMES,
    }
    # The page's template in a thread too (the figures' tables); the context is only read.
    text = await asyncio.to_thread(aiohttp_jinja2.render_string, "entity.html", request, context)
    response = web.Response(text=text, content_type="text/html", charset="utf-8")
    response.headers["Cache-Control"] = "no-store"
    return response


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def add_routes(app: web.Application, wrap: Callable[[str, Handler], Handler] = lambda name, handler: handler) -> None:
    """The routes; `wrap(name, handler)` lets the web stage serve some of them from its view
    cache (web/keptpages.py), which this stage cannot import."""
    entity = "{kind:" + KIND_PATTERN + r"}/{id}"
    app.router.add_get("/api/search", wrap("search", api_search))
    app.router.add_get("/search", wrap("search_page", search_page))
    app.router.add_get("/api/" + entity, wrap("figures", api_figures))
    app.router.add_get("/api/" + entity + "/kills", wrap("kills", api_kills))
    app.router.add_get("/" + entity, wrap("page", page))
