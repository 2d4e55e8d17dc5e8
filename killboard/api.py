"""HTTP JSON API: ingest (POST /api/killmails), reads, and /health."""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import ujson
from aiohttp import web

from .hub import encode, with_seq
from .keys import bus_status_key, config_key, follower_key, hub_key, metrics_key, pipeline_key, started_key, store_key
from .langs import BadLang, Langs, parse_langs
from .pipeline import QueueFull, StorageUnavailable
from .validate import Invalid, Submission, parse_submission
from .wire import body_in

log = logging.getLogger(__name__)

MAX_LIMIT = 500
DEFAULT_LIMIT = 50


def json_error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status, dumps=lambda o: encode(o).decode())


@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every error from /api and /health is a JSON body with a precise message."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or not request.path.startswith(("/api/", "/health")):
            raise
        message = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        if exc.status == 413:
            limit = request.app[config_key].max_body_bytes
            message = f"request body too large: the limit is {limit} bytes"
        log.info("%s %s -> %d %s", request.method, request.path, exc.status, message)
        response = json_error(exc.status, message)
        for header in ("Allow", "Retry-After"):
            if header in exc.headers:
                response.headers[header] = exc.headers[header]
        return response


def _authorize(request: web.Request) -> web.Response | None:
    token = request.app[config_key].ingest_token
    if token is None:
        return json_error(403, "ingest is disabled: start the server with KILLBOARD_INGEST_TOKEN set")
    given = request.headers.get("Authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
        log.info("POST /api/killmails from %s: missing or wrong token", request.remote)
        return json_error(401, "missing or wrong token: send 'Authorization: Bearer <KILLBOARD_INGEST_TOKEN>'")
    return None


async def post_killmails(request: web.Request) -> web.Response:
    denied = _authorize(request)
    if denied is not None:
        return denied
    config = request.app[config_key]
    body = await request.read()  # aiohttp enforces client_max_size: 413 past the limit
    try:
        data = ujson.loads(body)
    except ValueError as exc:
        return json_error(400, f"body is not valid JSON: {exc}")
    items = data if isinstance(data, list) else [data]
    if isinstance(data, list) and not data:
        return json_error(400, "empty array: send one killmail or an array of killmails")
    if len(items) > config.max_batch_items:
        return json_error(413, f"too many killmails in one request: {len(items)} > {config.max_batch_items}")

    # Kills given by id + hash only are accepted durably and completed from ESI by the worker.
    can_fetch = request.app[pipeline_key].fetch_killmail is not None
    subs: list[Submission] = []
    rejected: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        try:
            sub = parse_submission(item)
        except Invalid as exc:
            rejected.append({"index": index, "errors": exc.errors})
            continue
        if sub.esi is None and not can_fetch:
            rejected.append(
                {
                    "index": index,
                    "errors": ["killmail: only id and hash given, and this server has no ESI access (upstream off)"],
                }
            )
            continue
        subs.append(sub)
    if rejected:
        count_rejected(request, rejected)
        log.info("POST /api/killmails: rejected %d of %d items: %s", len(rejected), len(items), rejected[:3])
    if not subs:
        return json_error(422, "no valid killmail in the request", rejected=rejected)

    try:
        admitted = await request.app[pipeline_key].submit(subs, source="http")
    except QueueFull as exc:
        request.app[metrics_key].kills_rejected.labels("queue_full").inc(len(subs))
        log.warning("POST /api/killmails: %s; answered 503", exc)
        response = json_error(503, f"server busy: {exc}; retry later")
        response.headers["Retry-After"] = "5"
        return response
    except StorageUnavailable as exc:
        response = json_error(503, f"storage unavailable: {exc}; nothing was accepted, retry later")
        response.headers["Retry-After"] = "5"
        return response
    result = {"accepted": admitted.accepted, "duplicates": admitted.duplicates, "rejected": rejected}
    return web.json_response(result, status=202, dumps=lambda o: encode(o).decode())


def count_rejected(request: web.Request, rejected: list[dict[str, Any]]) -> None:
    counter = request.app[metrics_key].kills_rejected
    no_esi = sum(1 for r in rejected if r["errors"][0].startswith("killmail: only id and hash"))
    counter.labels("no_esi_body").inc(no_esi)
    counter.labels("invalid").inc(len(rejected) - no_esi)


def _int_param(request: web.Request, name: str, default: int | None, low: int, high: int | None = None) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name}: must be an integer, got {raw[:40]!r}") from None
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise web.HTTPBadRequest(text=f"{name}: must be {bound}, got {value}")
    return value


def _list_response(kills: list[bytes], extra: bytes = b"") -> web.Response:
    # The stored JSON is spliced in as is: no decode/re-encode of each kill on the read path.
    body = b'{"killmails":[' + b",".join(kills) + b"]" + extra + b"}"
    return web.Response(body=body, content_type="application/json")


def _lang(request: web.Request) -> Langs:
    """`lang=en` (or `de,en`): names only in those languages, as on the WebSocket."""
    try:
        return parse_langs(request.query.get("lang"))
    except BadLang as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None


async def list_killmails(request: web.Request) -> web.Response:
    """Newest first (`before=<killmail_id>` pages back), or in stored order after `after=<seq>`."""
    store = request.app[store_key]
    lang = _lang(request)
    limit = _int_param(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    before = _int_param(request, "before", None, 1)
    after = _int_param(request, "after", None, 0)
    assert limit is not None
    if after is not None and before is not None:
        raise web.HTTPBadRequest(text="give either before=<killmail_id> or after=<seq>, not both")
    if after is not None:
        rows = await store.after(after, limit)
        last = rows[-1].seq if rows else after
        extra = b',"next_after":%d' % last
        if after < store.pruned_through_seq:
            # A client resuming from an old position must learn it missed kills, not guess.
            days = request.app[config_key].retention_days
            extra += b',"pruned":' + encode(
                {
                    "through_seq": store.pruned_through_seq,
                    "message": f"kills up to seq {store.pruned_through_seq} may have been pruned by retention"
                    f" ({days} days); this page continues with the oldest kept",
                }
            )
        return _list_response(await _in_lang(rows, lang), extra)
    rows = await store.latest(limit, before)
    nxt = b"%d" % rows[-1].killmail_id if len(rows) == limit else b"null"
    return _list_response(await _in_lang(rows, lang), b',"next_before":' + nxt)


async def _in_lang(rows: list[Any], lang: Langs) -> list[bytes]:
    """The rows' kills, names cut to `lang`: a decode and encode of each (~0.5 ms), so a page of
    them runs in a thread and the loop keeps serving in between (ujson holds the GIL per call)."""
    if lang is None:
        return [with_seq(r.seq, r.body) for r in rows]
    return await asyncio.to_thread(lambda: [with_seq(r.seq, body_in(r.body, lang)) for r in rows])


async def get_killmail(request: web.Request) -> web.Response:
    raw = request.match_info["killmail_id"]
    try:
        killmail_id = int(raw)
    except ValueError:
        return json_error(400, f"killmail id must be an integer, got {raw[:40]!r}")
    lang = _lang(request)
    store = request.app[store_key]
    row = await store.get(killmail_id)
    if row is None:
        if killmail_id <= store.pruned_max_killmail_id:
            days = request.app[config_key].retention_days
            return json_error(
                410,
                f"killmail {killmail_id} is not stored: kills older than {days} days are pruned,"
                " and this id is in the pruned range",
                pruned=True,
            )
        return json_error(404, f"killmail {killmail_id} not found")
    return web.Response(body=with_seq(row.seq, body_in(row.body, lang)), content_type="application/json")


async def health(request: web.Request) -> web.Response:
    app = request.app
    store = app[store_key]
    pipeline = app[pipeline_key]
    hub = app[hub_key]
    follower = app.get(follower_key)
    bus = app.get(bus_status_key)
    return web.json_response(
        {
            "status": "ok" if pipeline.store_error is None else "degraded",
            "uptime": round(time.monotonic() - app[started_key], 3),
            "queue": pipeline.queue.qsize(),
            "inbox": await store.inbox_count(),
            "kills": await store.count(),
            "last_seq": await store.last_seq(),
            "processed": pipeline.processed,
            "clients": len(hub),
            "subscribed": hub.subscribed_count(),
            "deliveries": hub.deliveries,
            "slow_drops": hub.slow_drops,
            "upstream": follower.state.as_json() if follower is not None else None,
            "names_pending": await store.names_pending_count(),
            # Leak checks (tests, operators): live asyncio tasks and open file descriptors.
            "tasks": len(asyncio.all_tasks()),
            "fds": open_fds(),
            "store_error": pipeline.store_error,
            "bus": bus() if bus is not None else None,
        }
    )


def open_fds() -> int | None:
    """Open file descriptors of this process (sockets included); None where /proc is missing."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # minus the one listdir itself holds open
    except OSError:
        return None
