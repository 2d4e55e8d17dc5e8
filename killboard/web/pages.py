"""HTML pages, rendered with aiohttp-jinja2 from templates/ (autoescaped: names come from outside).

`/` is the live feed (the latest stored kills, server-rendered, then static/feed.js keeps it
live over the WebSocket); `/kill/{id}` is one kill. Every response carries a
Content-Security-Policy that allows only our own scripts, so even a name that slipped past
escaping could not run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp_jinja2
import jinja2
import ujson
from aiohttp import web
from markupsafe import Markup

from .. import entities
from ..battles.tables import battle_of
from ..config import resource_dir
from ..kill import display
from ..kill.fitting import fitting
from ..kill.langs import filter_names, reader_language
from ..kill.topics import kill_facts
from ..logs import client
from ..numbers import MAX_ID, bounded_int
from ..storage.rows import StoredKill
from . import filters, older
from .filters import Filter
from .keptpages import keep, respond
from .keys import reads_key, recent_key, static_key, store_key, viewcache_key
from .viewcache import Page, Version, ViewKey
from .ws import websocket

log = logging.getLogger(__name__)

# Rows rendered on load; feed.js keeps at most MAX_ROWS once live kills arrive.
INITIAL_ROWS = 50
MAX_ROWS = 200
# A filtered page looks through this many of the newest stored kills for matches (the size
# of the app's RecentKeys).
FILTER_SCAN = 1000

CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        # Ship renders from EVE's public image server are optional: the page is whole without them.
        "img-src 'self' https://images.evetech.net",
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    )
)


def setup_templates(app: web.Application) -> None:
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(resource_dir("templates")),
        undefined=jinja2.ChainableUndefined,
        filters={  # type: ignore[arg-type]  # the stubs want every filter to return str
            "isk": display.isk,
            "sec_level": display.security_level,
            "sec_text": display.security_text,
            "en": display.en,
            "ago": display.ago,
            "utc": display.utc_text,
            "final_blow": display.final_blow,
            "battle_time": _unix_utc,
        },
    )
    env.globals["big_kill"] = display.BIG_KILL


def compile_templates(env: jinja2.Environment) -> None:
    """Compile every page's template (the server does it at start, in a thread): the first
    reader of each page would otherwise wait for it."""
    for name in env.list_templates(extensions=["html"]):
        env.get_template(name)


async def render_page(name: str, request: web.Request, context: Mapping[str, Any]) -> web.Response:
    """A page's template rendered in a thread: a battle of hundreds of kills or a kill of
    thousands of attackers is 10-100 ms of pure work (templates, filters and the context are
    only read), which on the event loop would hold every socket up. The server's GIL switch
    interval (1 ms, cli.py) gives the loop its turn meanwhile."""
    text = await asyncio.to_thread(aiohttp_jinja2.render_string, name, request, context)
    return web.Response(text=text, content_type="text/html", charset="utf-8")


def _unix_utc(seconds: int) -> str:
    """Unix seconds as `YYYY-MM-DD HH:MM:SS` UTC (battles keep times as unix seconds)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(int(seconds)))


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: runs for every response, static files and errors included."""
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")


def _linker(current: Filter) -> Callable[[str, Any], str]:
    """Links on names and places: the entity's own page (killboard/entities)."""
    del current  # the page links out of the filter: the entity page has its own kills
    return entities.link


def _decode(page: list[StoredKill], wanted: Filter) -> list[dict[str, Any]]:
    condition = None if wanted.empty else wanted.condition()
    out = []
    for stored in page:
        kill = ujson.loads(stored.body)
        if condition is None or condition.matches(kill_facts(kill)):
            kill["seq"] = stored.seq
            out.append(kill)
    return out


@dataclass(frozen=True, slots=True)
class Shown:
    """The ids a feed page may show, newest first, and its older page."""

    ids: list[int]
    older: int | None  # the kill id the older page starts before; None: no older page
    scanned: int | None = None  # an older filtered page: the kill rows it looked at


async def _shown_ids(request: web.Request, wanted: Filter, before: int | None) -> Shown:
    """The newest INITIAL_ROWS kills, or those before kill `before`; for a filter, the matches
    among the newest FILTER_SCAN (their match keys are kept in memory, see killboard/web/recent.py,
    plus kills kept as "maybe" that are tested whole when read), or before `before` the matches
    among the kill rows older.older looks at."""
    store = request.app[store_key]
    if wanted.empty:
        ids = await store.latest_ids(INITIAL_ROWS + 1, before)
        return Shown(ids[:INITIAL_ROWS], ids[INITIAL_ROWS - 1] if len(ids) > INITIAL_ROWS else None)
    if before is not None:
        static, limits = request.app[static_key], request.app[reads_key]
        found = await older.older(store, static, limits, wanted.condition(), before, INITIAL_ROWS)
        return Shown(found.ids, found.next_before, found.scanned)
    recent = request.app[recent_key]
    await recent.refresh(store)
    # The older page goes on from the oldest kill the memory holds, if it may not hold every
    # stored kill (from the last row shown instead when the page is full: _render_index).
    return Shown(recent.matching(wanted.condition(), INITIAL_ROWS), recent.oldest() if recent.full else None)


def _render_rows(
    env: jinja2.Environment, kills: list[dict[str, Any]], lang: str, link: Callable[[str, Any], str]
) -> list[tuple[dict[str, Any], str]]:
    """Each kill's feed row, names in the reader's language (English where the static data has
    none in it). Runs in a thread: ~1 ms a kill."""
    row = env.get_template("row.html")
    out = []
    for kill in kills:
        shown = kill if lang == "en" else filter_names(kill, (lang,))
        out.append((kill, row.render(k=shown, link=link)))
    return out


async def index(request: web.Request) -> web.StreamResponse:
    # The spec serves the WebSocket at the root too: an upgrade request gets the socket.
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return await websocket(request)
    store = request.app[store_key]
    wanted = filters.from_query(request.query)
    # `before=<killmail_id>`: an older page, of the whole feed or of a filter (web/older.py).
    before = bounded_int(request.query.get("before", ""), 1, MAX_ID)
    canonical = urlencode({**wanted.query(), **({"before": str(before)} if before is not None else {})})
    if before is None and "before" in request.query:
        message = f"before: must be a killmail id from 1 to {MAX_ID}, got {request.query['before'][:40]!r}"
        log.info("GET / -> 400 %s", message, extra=client(request.remote))
        return aiohttp_jinja2.render_template("notfound.html", request, {"message": message}, status=400)
    if request.query_string and request.query_string != canonical:
        # The form sends every field (`min=&sec=&kind=system&id=…`): redirect to the short
        # link that names only what is set, so the address bar is the link to share.
        raise web.HTTPFound("/?" + canonical if canonical else "/")
    lang = reader_language(request.headers.get("Accept-Language", ""))
    cache = request.app[viewcache_key]
    # Read the last sequence first: the page resumes from it, so a kill stored while this
    # page renders is replayed over the socket (feed.js drops the duplicates) instead of lost.
    last_seq = await store.last_seq()
    key = ("/?" + canonical, lang)
    version = cache.version(last_seq)
    page = cache.page(key, version)
    if page is None:
        page = await _render_index(request, wanted, canonical, lang, key, version, before)
    return respond(request, page)


async def _render_index(
    request: web.Request, wanted: Filter, canonical: str, lang: str, key: ViewKey, version: Version, before: int | None
) -> Page:
    """The feed page for `version`: rows kept from earlier views (of any filter: a row depends on
    the kill and the language only) are reused, the others read, tested whole against the
    filter and rendered off the event loop."""
    store, cache = request.app[store_key], request.app[viewcache_key]
    generation = cache.generation  # rows read from here on are kept only if no kill changes meanwhile
    shown_ids = await _shown_ids(request, wanted, before)
    ids = shown_ids.ids
    # A kill kept as "maybe" (too many keys, web/recent.py) is read and tested whole every time.
    unsure = set() if wanted.empty else request.app[recent_key].unsure(ids)
    kept = {i: html for i in ids if i not in unsure and (html := cache.row(lang, i)) is not None}
    link = _linker(wanted)
    fresh: dict[int, tuple[dict[str, Any], str]] = {}
    missing = [i for i in ids if i not in kept]
    if missing:
        # An older page (history) renders in one of the render slots, as the large API reads do:
        # a crawler's many distinct pages take turns, and the live pages never wait behind them.
        async with request.app[reads_key].render() if before is not None else nullcontext():
            page = await store.many(missing)  # decoded and rendered off the loop, in one hop for the page
            if not wanted.empty and len(page) < len(missing):
                request.app[recent_key].forget(set(missing) - {k.killmail_id for k in page})  # pruned since
            env = aiohttp_jinja2.get_env(request.app)
            # Decoded and tested again whole: kills kept as "maybe" (too many keys to keep) may not match.
            kills = await asyncio.to_thread(_decode, page, wanted)
            rendered = await asyncio.to_thread(_render_rows, env, kills, lang, link)
        fresh = {kill["killmail_id"]: (kill, html) for kill, html in rendered}
    shown: list[str] = []
    for killmail_id in ids:
        if killmail_id in kept:
            html = kept[killmail_id]
        elif killmail_id in fresh:
            kill, html = fresh[killmail_id]
            cache.put_row(lang, killmail_id, html, generation)
            if missing_names := display.nameless(kill):
                cache.waiting_for_names(killmail_id, missing_names)
        else:
            continue  # pruned, or a "maybe" that did not match
        shown.append(html)
        if len(shown) == INITIAL_ROWS:
            break
    older_id = shown_ids.older
    if not wanted.empty and before is None and len(shown) == INITIAL_ROWS:
        older_id = killmail_id  # a full page of the newest matches goes on from its last row
    context = {
        "lang": lang,
        "rows": [Markup(html) for html in shown],
        "count": await store.count(),
        "filter": wanted,
        "channel": wanted.channel(),
        "query": canonical,
        "last_seq": version[0],
        "older": "/?" + urlencode({**wanted.query(), "before": str(older_id)}) if older_id else "",
        "newest": "/?" + urlencode(wanted.query()) if not wanted.empty else "/",
        "paged": before is not None,
        # An older filtered page that ran out of rows to look at before it filled: it says so.
        "looked": shown_ids.scanned if shown_ids.scanned and older_id and len(shown) < INITIAL_ROWS else None,
        "before": before,
        "max_rows": MAX_ROWS,
        "value_floors": filters.VALUE_FLOORS,
        "security_filters": filters.SECURITY,
        "ship_classes": filters.SHIP_CLASSES,
        "entity_kinds": filters.ENTITY_KINDS,
        "entity_label": await _entity_label(request, wanted, [kill for kill, _ in fresh.values()]),
    }
    body = await asyncio.to_thread(aiohttp_jinja2.render_string, "index.html", request, context)
    return await keep(cache, key, version, body.encode(), generation)


async def _entity_label(request: web.Request, wanted: Filter, kills: list[dict[str, Any]]) -> str:
    """A readable name for the entity filter: from the static data, the names ESI gave, or the
    kills read for this page."""
    kind, entity_id = wanted.entity_kind, wanted.entity_id
    if kind is None or entity_id is None:
        return ""
    static = request.app[static_key]
    # Places and ship types or groups are named by the static data (a translation object, or a name).
    known: dict[str, Mapping[int, Any]] = {
        "system": static.systems,
        "region": static.regions,
        "ship": static.types,
        "group": static.groups,
    }
    if kind in known:
        found = known[kind].get(entity_id)
        names = getattr(found, "names", None)
        return display.en(names) if names else str(getattr(found, "name", ""))
    if name := (await request.app[store_key].names([entity_id])).get(entity_id):
        return name
    for kill in kills:
        for person in (kill.get("victim") or {}, *(kill.get("attackers") or ())):
            if person.get(f"{kind}_id") == entity_id and person.get(f"{kind}_name"):
                return str(person[f"{kind}_name"])
    return ""


async def kill_detail(request: web.Request) -> web.StreamResponse:
    killmail_id = int(request.match_info["killmail_id"])
    stored = await request.app[store_key].get(killmail_id)
    if stored is None:
        return aiohttp_jinja2.render_template(
            "notfound.html",
            request,
            {"message": f"No kill {killmail_id} is stored here (yet)."},
            status=404,
        )
    lang = reader_language(request.headers.get("Accept-Language", ""))
    static = request.app[static_key]

    def prepare() -> dict[str, Any]:
        """Decoding, the reader's language, the fitting and the attackers' order: a fleet fight's
        kill is megabytes, so all of it in a thread."""
        kill = ujson.loads(stored.body)
        kill["seq"] = stored.seq
        if lang != "en":
            kill = filter_names(kill, (lang,))
        fit = fitting(kill, static.flags, static.types)
        return {
            "lang": lang,
            "fit": fit,
            "eft": fit.eft(f"Kill {killmail_id}"),
            "k": kill,
            "attackers": display.attackers_in_order(kill.get("attackers") or ()),
            "groups": display.slot_groups(kill.get("items") or (), static.flags),
        }

    context = await asyncio.to_thread(prepare)
    context["link"] = _linker(Filter())
    context["battle_id"] = await battle_of(request.app[store_key], killmail_id)
    return await render_page("kill.html", request, context)
