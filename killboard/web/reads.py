"""Bounds on large API reads: pages are streamed out in chunks, few at once, each in a time limit.

`GET /api/killmails?limit=500` is ~14 MiB of JSON. Built whole, 16 of them at once raised the
server's peak RSS by ~640 MB and kept the event loop rendering for seconds. Streamed, a response holds one chunk of
`CHUNK` kills at a time; at most `streams` responses run at once (others wait up to
`wait` seconds, then get 503), and only `renders` of them render a chunk at a time, so
/health and the page never queue behind more than a couple of chunks. A client that stops
reading cannot hold a slot for longer than `deadline`: its connection is cut.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import hdrs, web

from ..logs import client
from ..storage.rows import StoredKill
from .httpzip import choose

log = logging.getLogger(__name__)

# Kills fetched and rendered in one step: ~0.7 MB of JSON for average kills.
CHUNK = 25


class Busy(Exception):
    """Every stream slot stayed taken for the whole wait."""


@dataclass
class ReadLimits:
    streams: int = 8
    renders: int = 2
    wait: float = 5.0
    deadline: float = 60.0
    _streams: asyncio.Semaphore = field(init=False)
    _renders: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        self._streams = asyncio.Semaphore(self.streams)
        self._renders = asyncio.Semaphore(self.renders)

    @asynccontextmanager
    async def stream(self) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(self.wait):
                await self._streams.acquire()
        except TimeoutError:
            raise Busy(f"{self.streams} large reads are already running") from None
        try:
            yield
        finally:
            self._streams.release()

    @asynccontextmanager
    async def render(self) -> AsyncIterator[None]:
        async with self._renders:
            yield


# The next rows after a cursor (None: from the start), at most `count` of them.
Fetch = Callable[[int | None, int], Awaitable[list[StoredKill]]]


async def stream_kills(
    request: web.Request,
    limits: ReadLimits,
    fetch: Fetch,
    cursor_of: Callable[[StoredKill], int],
    start: int | None,
    limit: int,
    trailer: Callable[[StoredKill | None, int], bytes],
    database_error: Callable[[sqlite3.DatabaseError], bool],
    encode_rows: Callable[[list[StoredKill]], Awaitable[list[bytes]]],
) -> web.StreamResponse:
    """`{"killmails":[...]` + trailer(last kill sent, how many) + `}`, written a chunk at a time.
    `encode_rows` gives each row's JSON (the stored JSON as is, or its names cut to a `lang`).
    Gzipped (or deflated) chunk by chunk when the client accepts it.

    The first chunk is read before the status line goes out, so a read the database cannot
    answer at all still gets its 4xx/503 JSON from the middlewares; a database error after that
    (a damaged page further on) is handed to `database_error` (True: it was logged as damage)
    and the connection is cut."""
    async with limits.stream():
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        coding = choose(request.headers.get(hdrs.ACCEPT_ENCODING, ""))
        if coding is not None:
            response.enable_compression(coding)
        async with limits.render():
            rows = await fetch(start, min(CHUNK, limit))
        try:
            async with asyncio.timeout(limits.deadline):
                await response.prepare(request)
                await response.write(b'{"killmails":[')
                sent, cursor, last = 0, start, None
                while sent < limit:
                    wanted = min(CHUNK, limit - sent)
                    if sent:
                        async with limits.render():
                            rows = await fetch(cursor, wanted)
                    if rows:
                        chunk = b",".join(await encode_rows(rows))
                        await response.write(b"," + chunk if sent else chunk)
                        sent += len(rows)
                        last = rows[-1]
                        cursor = cursor_of(last)
                    if len(rows) < wanted:
                        break
                await response.write(b"]" + trailer(last, sent) + b"}")
                await response.write_eof()
        except TimeoutError:
            # The status line is gone already: all that is left is to stop holding the slot.
            log.info(
                "%s %s from %s: not read within %g s; connection cut",
                request.method,
                request.path_qs[:200],
                request.remote,
                limits.deadline,
                extra=client(request.remote),
            )
            _abort(request)
        except ConnectionResetError:
            pass  # the client went away: nothing to answer
        except sqlite3.DatabaseError as exc:
            # A damaged file is logged there, once, not as a traceback per read.
            if not database_error(exc):
                log.warning("%s %s: database error mid-response: %s; connection cut", request.method, request.path, exc)
            _abort(request)
        except Exception:
            if not response.prepared:
                raise
            # The status line is gone already: cut the connection so the client sees a broken
            # body rather than an error page glued to half a list.
            log.exception("%s %s failed mid-response; connection cut", request.method, request.path_qs[:200])
            _abort(request)
        return response


def _abort(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()
