"""Battle and entity pages and their JSON, answered from the view cache while what they show is
unchanged: ETag, 304, a body gzipped once.

A handler here is the page's own handler (web/battles.py, killboard/entities/views.py) wrapped
with a *stamp*: a cheap look at what the page depends on, taken before anything is read for it.
The stamp and the cache's generation (bumped by every late name, rewrite, prune; web/viewcache.py)
make the page's version; a view with the same version gets the kept body without running the
handler. What each stamp holds, and why that is enough:

- `/battle/{id}`, `/api/battles/{id}`: the battle's row (its last kill's seq, kill count, end time,
  whether it is ongoing now). Every kill, merge and side change of a battle is written in a
  kills' transaction that moves its last seq or count (a merge: the kept battle's); a battle that
  merged away redirects (not kept). Side moves (`?side.X=n`) are in the query, so in the key.
- `/battles`, `/api/battles`: the last stored seq (a battle changes only with a stored kill);
  kept until the first shown battle stops being ongoing (the handler says when).
- `/{kind}/{id}`: the last stored seq (the page resumes its live feed from it) and the month
  (the figures show the last 12 months).
- `/api/{kind}/{id}`, `/api/{kind}/{id}/kills`: the entity's newest kill (its figures and kills
  change only with one of its own kills) and the month.

A page is kept by the query names its handler reads (`Reads`), and its handler sees only those:
`?x=1`, `?x=2`… or a cache-buster's `?_=<time>` is the same page, not one render each that
pushes everyone's pages out of the cache.

Concurrent first views of one page (the same key and version) render it once: the first runs
the handler, the others wait for its body (`Rendering`). A handler that fails, or answers
anything not kept, lets each waiter run the handler itself.

Entity and battle pages are not kept while kills stored before the participant index or the
figures existed are still being counted in (after an upgrade): those change figures and
battles without a new kill.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from urllib.parse import urlencode

from aiohttp import web
from aiohttp.web_response import ContentCoding

from ..battles import tables
from ..entities import entities_key
from ..entities.service import KINDS
from ..kill.langs import reader_language
from ..numbers import MAX_ID, bounded_int
from .httpzip import MIN_BYTES, TYPES, choose, gzip_body
from .keys import battles_key, rendering_key, store_key, viewcache_key
from .viewcache import Page, Rendering, Version, ViewCache, ViewKey

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# What a page depends on beside the generation; None: do not keep this one (the handler answers).
Stamp = Callable[[web.Request], Awaitable[tuple[Hashable, ...] | None]]
# The query names a page's handler reads; a name ending in "." stands for every name that begins
# with it (a battle's `side.<id>` moves).
Reads = tuple[str, ...]
# A handler sets this on its response: the page is stale from this wall-clock time on.
EXPIRES = web.ResponseKey("expires", float)
# Bodies up to this size are gzipped on the loop (keep).
INLINE_GZIP = 32 * 1024


async def keep(
    cache: ViewCache,
    key: ViewKey,
    version: Version,
    body: bytes,
    generation: int,
    content_type: str = "text/html",
    expires: float | None = None,
) -> Page:
    """Gzip the body once and keep it for `version` (web/viewcache.py put_page). A big body is
    gzipped in a thread; a small one here, since the hop costs more than the work (zlib-ng:
    at most ~0.3 ms for 32 KB of a page)."""
    if len(body) < MIN_BYTES:
        zipped = None
    elif len(body) <= INLINE_GZIP:
        zipped = gzip_body(body)
    else:
        zipped = await asyncio.to_thread(gzip_body, body)
    return cache.put_page(key, version, body, generation, zipped, content_type, expires)


def respond(request: web.Request, page: Page) -> web.Response:
    """The page, or 304 when the browser has it: browsers revalidate every time (no-cache). The
    nginx recipe keeps it for the second it was fetched in (deploy/nginx/killboard.conf)."""
    headers = {"ETag": page.etag, "Cache-Control": "no-cache", "Vary": "Accept-Language, Accept-Encoding"}
    if page.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    body = page.body
    if page.gzipped is not None and choose(request.headers.get("Accept-Encoding", "")) is ContentCoding.gzip:
        headers["Content-Encoding"] = "gzip"
        body = page.gzipped
    return web.Response(body=body, content_type=page.content_type, charset="utf-8", headers=headers)


def read_query(request: web.Request, reads: Reads) -> list[tuple[str, str]]:
    """The query's pairs a handler reading `reads` can see, in a canonical order: each plain name
    once, with its first value (what `query.get` gives), and every pair under a prefix, in the
    order given for each name (a repeated `side.<id>`: the last one moves it)."""
    query = request.query
    pairs = [(name, query[name]) for name in sorted(reads) if not name.endswith(".") and name in query]
    if prefixes := tuple(name for name in reads if name.endswith(".")):
        pairs += sorted(((k, v) for k, v in query.items() if k.startswith(prefixes)), key=lambda kv: kv[0])
    return pairs


def view_key(request: web.Request, pairs: list[tuple[str, str]]) -> ViewKey:
    """(the path with the query the page reads, the reader's language)."""
    query = urlencode(pairs)
    return (request.path + ("?" + query if query else ""), reader_language(request.headers.get("Accept-Language", "")))


def kept(handler: Handler, stamp: Stamp, reads: Reads = ()) -> Handler:
    """`handler`, answered from the view cache while `stamp` and the generation are unchanged.
    Only a 200 with a JSON or HTML body is kept; errors, redirects and 404s go through.
    Concurrent first views of one version run the handler once. The handler sees only the
    query names in `reads`: what it cannot read cannot make another page."""

    async def serve(request: web.Request) -> web.StreamResponse:
        cache = request.app[viewcache_key]
        generation = cache.generation  # before anything is read: a change meanwhile is not kept
        pairs = read_query(request, reads)
        if len(pairs) != len(request.query):
            request = request.clone(rel_url=request.rel_url.with_query(pairs))
        depends = await stamp(request)
        if depends is None:
            return await handler(request)
        key, version = view_key(request, pairs), cache.version(*depends)
        page = cache.page(key, version)
        if page is None:
            rendering = request.app[rendering_key]
            if (flight := rendering.join(key, version)) is not None:
                # shielded: this reader going away must not cancel the render the others wait for
                page = await asyncio.shield(flight)
            if page is None:
                response, page = await render(request, rendering, key, version, generation)
                if page is None:
                    return response  # not kept (an error, a redirect, a 404): the handler's own answer
        return respond(request, page)

    async def render(
        request: web.Request, rendering: Rendering, key: ViewKey, version: Version, generation: int
    ) -> tuple[web.StreamResponse, Page | None]:
        """Run the handler; a 200 HTML or JSON body is kept and given to every view waiting for it."""
        if rendering.join(key, version) is not None:
            return await handler(request), None  # a render that failed for its waiters: each on its own
        rendering.start(key, version)
        page: Page | None = None
        try:
            response = await handler(request)
            if (
                type(response) is web.Response
                and response.status == 200
                and isinstance(response.body, bytes)
                and response.content_type in TYPES
            ):
                cache = request.app[viewcache_key]
                expires = response.get(EXPIRES)
                page = await keep(cache, key, version, response.body, generation, response.content_type, expires)
        finally:
            rendering.end(key, version, page)
        return response, page

    return serve


def _backlog(request: web.Request) -> bool:
    """Older kills are still being counted into the participant index or the figures."""
    return request.app[store_key].index_backlog_through > 0 or not request.app[entities_key].caught_up


def _month() -> int:
    t = time.gmtime()
    return t.tm_year * 12 + t.tm_mon


async def battle_stamp(request: web.Request) -> tuple[Hashable, ...] | None:
    battle_id = bounded_int(request.match_info["battle_id"], 1, MAX_ID)
    if battle_id is None or _backlog(request):
        return None
    row = await tables.get(request.app[battles_key].store, battle_id)
    if row is None or row.merged_into is not None:
        return None  # unknown (404) or merged (a redirect): the handler answers
    return (row.last_seq, row.kill_count, row.end_time, row.ongoing(time.time()))


async def battles_stamp(request: web.Request) -> tuple[Hashable, ...] | None:
    if _backlog(request):
        return None
    return (await request.app[store_key].last_seq(),)


async def entity_page_stamp(request: web.Request) -> tuple[Hashable, ...] | None:
    if _backlog(request):
        return None
    return (await request.app[store_key].last_seq(), _month())


async def entity_stamp(request: web.Request) -> tuple[Hashable, ...] | None:
    kind, entity_id = request.match_info["kind"], bounded_int(request.match_info["id"], 1, MAX_ID)
    if kind not in KINDS or entity_id is None or _backlog(request):
        return None
    newest = await request.app[store_key].kills_of(KINDS[kind], entity_id, None, 1)
    return (newest[0][0] if newest else 0, _month())


# killboard/entities/views.py's kept routes: (stamp, the query names the handler reads).
ENTITY_ROUTES: dict[str, tuple[Stamp, Reads]] = {
    "page": (entity_page_stamp, ("before", "role")),
    "figures": (entity_stamp, ("lang",)),
    "kills": (entity_stamp, ("class", "cursor", "limit", "min", "npc", "role", "sec", "solo")),
}


def entity_routes(name: str, handler: Handler) -> Handler:
    """How killboard/entities/views.py's routes are served here: the entity page and its JSON
    kept; search is not (it reads memory only)."""
    if name not in ENTITY_ROUTES:
        return handler
    stamp, reads = ENTITY_ROUTES[name]
    return kept(handler, stamp, reads)
