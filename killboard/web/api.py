"""HTTP JSON API: ingest (POST /api/killmails), reads, and /health."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import ujson
from aiohttp import web
from aiohttp.http_exceptions import DecompressSizeError, HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from ..auth import bearer_matches
from ..ingest.offload import parse_items, wants
from ..ingest.pipeline import QueueFull, StorageUnavailable, TooBig
from ..kill.frames import encode, with_seq
from ..kill.langs import BadLang, Langs, parse_langs
from ..kill.validate import Submission
from ..live.wire import body_in
from ..logs import client
from ..numbers import MAX_ID, BadNumber, parse_int, query_int
from ..storage.rows import StoredKill
from . import reads
from .keys import (
    bus_status_key,
    config_key,
    damage_key,
    follower_key,
    hub_key,
    metrics_key,
    pipeline_key,
    reads_key,
    started_key,
    store_key,
    webhooks_key,
)

log = logging.getLogger(__name__)

MAX_LIMIT = 500
BIG_BODY = 64 * 1024  # ~15 typical kills; a thread hop costs ~0.1 ms, parsing 64 KiB ~1 ms
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
        log.info(
            "%s %s -> %d %s", request.method, request.path[:120], exc.status, message, extra=client(request.remote)
        )
        response = json_error(exc.status, message)
        for header in ("Allow", "Retry-After"):
            if header in exc.headers:
                response.headers[header] = exc.headers[header]
        return response
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        if not request.path.startswith(("/api/", "/health")):
            raise
        # A bug, not the client's fault: one log record with the traceback, and JSON like every
        # other answer here instead of aiohttp's text/plain page.
        log.exception("%s %s -> 500", request.method, request.path)
        return json_error(500, "internal error: the server logged it; please report it if it persists")


def _authorize(request: web.Request) -> web.Response | None:
    token = request.app[config_key].ingest_token
    if token is None:
        return json_error(403, "ingest is disabled: start the server with KILLBOARD_INGEST_TOKEN set")
    if not bearer_matches(request.headers.get("Authorization", ""), token):
        log.info("POST /api/killmails from %s: missing or wrong token", request.remote, extra=client(request.remote))
        return json_error(401, "missing or wrong token: send 'Authorization: Bearer <KILLBOARD_INGEST_TOKEN>'")
    return None


async def post_killmails(request: web.Request) -> web.StreamResponse:
    denied = _authorize(request)
    if denied is not None:
        return denied
    config = request.app[config_key]
    body = await _read_body(request, config.body_timeout)
    if not isinstance(body, bytes):
        return body
    # Kills given by id + hash only are accepted durably and completed from ESI by the worker.
    can_fetch = request.app[pipeline_key].fetch_killmail is not None
    # A big body (a fleet fight's kills, up to 32 MiB) is parsed and validated in a thread: on the
    # loop, a 0.5 MB kill of 3,000 attackers took ~35 ms, a full 32 MiB body seconds. One kill over
    # 64 KiB or any body over 256 KiB (offload.wants) goes to the worker process, which keeps a
    # fleet fight as bytes: the one C call that decodes 1.75 MB holds the GIL 8-33 ms, in a thread too.
    offload = request.app[pipeline_key].offload
    parsed: web.Response | tuple[int, list[Submission], list[dict[str, Any]]] | None = None
    if offload is not None and wants(body):
        outcome = await offload.parse(body, config.max_batch_items, can_fetch)
        parsed = _refused(outcome) if isinstance(outcome, str) else outcome
    if parsed is None:  # a smaller body, or the worker died (it is replaced on the next one)
        if len(body) > BIG_BODY:
            parsed = await asyncio.to_thread(_parse_body, body, config.max_batch_items, can_fetch)
        else:
            parsed = _parse_body(body, config.max_batch_items, can_fetch)
    if isinstance(parsed, web.Response):
        return parsed
    count, subs, rejected = parsed
    if rejected:
        count_rejected(request, rejected)
        log.info(
            "POST /api/killmails: rejected %d of %d items: %s",
            len(rejected),
            count,
            rejected[:3],
            extra=client(request.remote),
        )
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
    except TooBig as exc:
        # Larger than the whole queue (KILLBOARD_QUEUE_BYTES): waiting would never make room.
        request.app[metrics_key].kills_rejected.labels("queue_full").inc(len(subs))
        log.warning("POST /api/killmails: %s; answered 413", exc)
        return json_error(413, f"too large to queue: {exc}; send fewer kills a request")
    except StorageUnavailable as exc:
        response = json_error(503, f"storage unavailable: {exc}; nothing was accepted, retry later")
        response.headers["Retry-After"] = "5"
        return response
    result = {"accepted": admitted.accepted, "duplicates": admitted.duplicates, "rejected": rejected}
    # The bytes as they are (json_response would decode them to a str and encode that again).
    return web.Response(body=encode(result), status=202, content_type="application/json", charset="utf-8")


async def _read_body(request: web.Request, timeout: float) -> bytes | web.StreamResponse:
    """The request body (aiohttp enforces client_max_size: 413 past it), or the error answered.

    A client that sends fewer bytes than its Content-Length would otherwise hold the request
    open until the peer gives up; a body that does not decode as its Content-Encoding says is
    the client's mistake, not a 500.
    """
    try:
        if request.content.is_eof():
            # All of it came with the headers (a kill's POST, most often): nothing to wait for,
            # so no timer is set and cancelled.
            return await request.read()
        async with asyncio.timeout(timeout):
            return await request.read()
    except TimeoutError:
        log.info(
            "%s %s from %s: body not received within %g s",
            request.method,
            request.path,
            request.remote,
            timeout,
            extra=client(request.remote),
        )
        return await _answer_and_close(
            request, json_error(408, f"request body not received within {timeout:g} seconds")
        )
    except RequestPayloadError as exc:
        cause = exc.__cause__ if isinstance(exc.__cause__, HttpProcessingError) else None
        if isinstance(cause, DecompressSizeError):
            raise web.HTTPRequestEntityTooLarge(max_size=request.client_max_size, actual_size=None) from None  # type: ignore[arg-type]
        detail = cause.message if cause is not None else str(exc)
        encoding = request.headers.get("Content-Encoding", "")
        log.info(
            "%s %s from %s: unreadable body (%s)",
            request.method,
            request.path,
            request.remote,
            detail,
            extra=client(request.remote),
        )
        if encoding:
            message = f"body is not valid {encoding[:40]!r} data, as its Content-Encoding header says: {detail}"
        else:
            message = f"body could not be read: {detail}"
        return await _answer_and_close(request, json_error(400, message))


async def _answer_and_close(request: web.Request, response: web.Response) -> web.StreamResponse:
    """Send `response`, then close the connection: the rest of the body is unread (or unreadable),
    so the connection cannot carry another request, and aiohttp would otherwise linger up to 10 s
    reading it (and log the payload error it finds there as an unhandled exception)."""
    response.force_close()
    await response.prepare(request)
    await response.write_eof()
    request.protocol.force_close()  # the answer is written: close now instead of lingering
    return response


def _parse_body(
    body: bytes, max_items: int, can_fetch: bool
) -> web.Response | tuple[int, list[Submission], list[dict[str, Any]]]:
    """(number of items, valid submissions, rejected items with their errors), or the error to answer."""
    try:
        data = ujson.loads(body)
    except ValueError as exc:
        return json_error(400, f"body is not valid JSON: {exc}")
    parsed = parse_items(data, max_items, can_fetch)
    return _refused(parsed) if isinstance(parsed, str) else parsed


def _refused(why: str) -> web.Response:
    """A whole body refused, as parse_items says ("413 too many …")."""
    return json_error(int(why[:3]), why[4:])


def count_rejected(request: web.Request, rejected: list[dict[str, Any]]) -> None:
    counter = request.app[metrics_key].kills_rejected
    no_esi = sum(1 for r in rejected if r["errors"][0].startswith("killmail: only id and hash"))
    counter.labels("no_esi_body").inc(no_esi)
    counter.labels("invalid").inc(len(rejected) - no_esi)


def _int_param(request: web.Request, name: str, default: int | None, low: int, high: int = MAX_ID) -> int | None:
    try:
        return query_int(request.query, name, low, high, default)
    except BadNumber as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None


def _lang(request: web.Request) -> Langs:
    """`lang=en` (or `de,en`): names only in those languages, as on the WebSocket."""
    try:
        return parse_langs(request.query.get("lang"))
    except BadLang as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None


async def list_killmails(request: web.Request) -> web.StreamResponse:
    """Newest first (`before=<killmail_id>` pages back), or in stored order after `after=<seq>`."""
    store = request.app[store_key]
    lang = _lang(request)
    limit = _int_param(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    before = _int_param(request, "before", None, 1)
    after = _int_param(request, "after", None, 0)
    assert limit is not None
    if after is not None and before is not None:
        raise web.HTTPBadRequest(text="give either before=<killmail_id> or after=<seq>, not both")

    async def encode_rows(rows: list[StoredKill]) -> list[bytes]:
        return await _in_lang(rows, lang)

    try:
        if after is not None:
            return await reads.stream_kills(
                request,
                request.app[reads_key],
                lambda seq, n: store.after(seq or 0, n),
                lambda row: row.seq,
                after,
                limit,
                lambda last, _: _after_trailer(request, after, last),
                request.app[damage_key].note,
                encode_rows,
            )
        return await reads.stream_kills(
            request,
            request.app[reads_key],
            lambda before, n: store.latest(n, before),
            lambda row: row.killmail_id,
            before,
            limit,
            lambda last, sent: b',"next_before":' + (b"%d" % last.killmail_id if last and sent == limit else b"null"),
            request.app[damage_key].note,
            encode_rows,
        )
    except reads.Busy as exc:
        log.warning("GET /api/killmails from %s: %s; answered 503", request.remote, exc)
        response = json_error(503, f"server busy: {exc}; retry later")
        response.headers["Retry-After"] = "2"
        return response


def _after_trailer(request: web.Request, after: int, last: StoredKill | None) -> bytes:
    store = request.app[store_key]
    extra = b',"next_after":%d' % (last.seq if last else after)
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
    return extra


async def _in_lang(rows: list[StoredKill], lang: Langs) -> list[bytes]:
    """The rows' kills, names cut to `lang`: a decode and encode of each (~0.5 ms), so a page of
    them runs in a thread and the loop keeps serving in between (ujson holds the GIL per call)."""
    if lang is None:
        return [with_seq(r.seq, r.body) for r in rows]
    return await asyncio.to_thread(lambda: [with_seq(r.seq, body_in(r.body, lang)) for r in rows])


async def get_killmail(request: web.Request) -> web.Response:
    raw = request.match_info["killmail_id"]
    killmail_id = parse_int(raw)
    if killmail_id is None or not 0 < killmail_id <= MAX_ID:
        return json_error(400, f"killmail id must be an integer from 1 to {MAX_ID}, got {raw[:40]!r}")
    lang = _lang(request)
    store = request.app[store_key]
    row = await store.get(killmail_id)
    if row is None:
        if killmail_id <= store.pruned_max_killmail_id:
            days = request.app[config_key].retention_days
            kept = f"kills older than {days} days are pruned" if days else "retention pruned old kills earlier"
            return json_error(
                410, f"killmail {killmail_id} is not stored: {kept}, and this id is in the pruned range", pruned=True
            )
        return json_error(404, f"killmail {killmail_id} not found")
    if len(row.body) > BIG_BODY or lang is not None:
        # A fleet fight is megabytes: names filtered and the seq spliced in off the loop.
        body = await asyncio.to_thread(lambda: with_seq(row.seq, body_in(row.body, lang)))
    else:
        body = with_seq(row.seq, row.body)
    return web.Response(body=body, content_type="application/json")


async def health(request: web.Request) -> web.Response:
    app = request.app
    store = app[store_key]
    pipeline = app[pipeline_key]
    hub = app[hub_key]
    follower = app.get(follower_key)
    damaged = app[damage_key].problem
    bus = app.get(bus_status_key)
    counts = await store.counts()
    return web.json_response(
        {
            "status": "ok" if pipeline.store_error is None and damaged is None else "degraded",
            "uptime": round(time.monotonic() - app[started_key], 3),
            "queue": pipeline.queue.qsize(),
            "queue_bytes": pipeline.queue.nbytes,
            "inbox": counts.inbox,
            "kills": counts.kills,
            "last_seq": counts.last_seq,
            "processed": pipeline.processed,
            "clients": len(hub),
            "subscribed": hub.subscribed_count(),
            "subscription_bytes": hub.sub_bytes,
            "subscriptions_refused": hub.sub_refused,
            "deliveries": hub.deliveries,
            "slow_drops": hub.slow_drops,
            "upstream": follower.state.as_json() if follower is not None else None,
            "names_pending": counts.names_pending,
            # Leak checks (tests, operators): live asyncio tasks and open file descriptors.
            "tasks": len(asyncio.all_tasks()),
            "fds": open_fds(),
            "store_error": pipeline.store_error,
            "webhooks": app[webhooks_key].health() if webhooks_key in app else None,
            "database_damage": damaged,
            "bus": bus() if bus is not None else None,
        }
    )


def open_fds() -> int | None:
    """Open file descriptors of this process (sockets included); None where /proc is missing."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # minus the one listdir itself holds open
    except OSError:
        return None
