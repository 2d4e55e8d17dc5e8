"""The writer's side of the bus: append every stored kill to the stream, and refill from SQLite
what the stream lacks (Redis was down, restarted or lost its data), in order, before new kills.

The pipeline hands each kill over after its batch is committed (`on_stored`), into a buffer
bounded in bytes; a task appends the buffer with one script call per batch. The script checks
the stream's last entry is the one this writer last appended before it adds anything: when it is
not (Redis restarted empty, a failover, a flush), nothing is added and the writer appends from
SQLite what is missing first. A kill never reaches the stream out of order or twice, and the
writer's own sockets never wait for Redis.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import suppress
from types import ModuleType
from typing import Any

import ujson
from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..config import Config
from ..ingest.pipeline import Stored
from ..ingest.r2z2 import backoff_delay
from ..kill.topics import kill_facts
from ..storage.store import Store
from ..web.keys import bus_status_key, config_key, metrics_key, store_key, stored_hooks_key
from . import stream
from .stream import Entry

log = logging.getLogger(__name__)

# isal at level 1: the zlib stream stdlib zlib makes at level 1 (the same bytes, ±1%) at ~0.26x
# its CPU on the real kills' bodies (bench/compress.py); any zlib inflates it, so readers of
# either version read entries of either. stdlib zlib when isal is not installed.
_deflate: ModuleType
try:
    from isal import isal_zlib as _deflate
except ImportError:
    _deflate = zlib

# Kills per script call: ~5.5 KB compressed each, ~0.6 MB a call.
BATCH = 100
# Kills waiting for Redis, in bytes of JSON. Past it the buffer is let go: the kills are in
# SQLite and are appended from there once Redis is back (what a long outage costs is a refill).
BUFFER_BYTES = 64 * 1024 * 1024
# How long a stop waits for the buffer to reach Redis; what is left is refilled on the next start.
FLUSH_TIMEOUT = 1.5

# KEYS[1] the stream; ARGV: the seq the stream must end with, MAXLEN, then per entry its ID and
# its 10 field/value items. Returns -1 when appended, else the seq the stream actually ends with.
APPEND = """
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local have = 0
if #newest > 0 then have = tonumber(string.match(newest[1][1], '^(%d+)')) end
if have ~= tonumber(ARGV[1]) then return have end
for i = 3, #ARGV, 11 do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], ARGV[i],
    ARGV[i+1], ARGV[i+2], ARGV[i+3], ARGV[i+4], ARGV[i+5], ARGV[i+6], ARGV[i+7], ARGV[i+8], ARGV[i+9], ARGV[i+10])
end
return -1
"""


class StreamWriter:
    """Keeps the stream equal to the tail of the kills table."""

    def __init__(self, redis: Redis, store: Store, config: Config, tail: int) -> None:
        self._redis = redis
        self._store = store
        self._key = config.redis_stream
        self._maxlen = config.redis_maxlen
        self._live_max_age = config.live_max_age
        self._script = redis.register_script(APPEND)
        self.tail = tail  # the last stored seq handed over: the next kill's `prev`
        self.appended: int | None = None  # the stream's last seq, None until read from Redis
        self._filled_to = 0  # SQLite was read up to here for the current stream: nothing else below
        self._buffer: deque[Entry] = deque()
        self._buffered = 0
        self._overflowed = False
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self.connected = False
        self.error: str | None = None
        self.refilled = 0
        self.resets = 0

    def on_stored(self, stored: Stored) -> None:
        """The pipeline's hook: called once per stored kill, in seq order, after its commit."""
        assert stored.facts is not None  # the pipeline keeps facts for every kill while the bus runs
        body = stored.kill.body
        entry = Entry(stored.seq, self.tail, body, stored.facts, stored.live)
        self.tail = stored.seq
        self._idle.clear()
        self._wake.set()
        if self._overflowed or self._buffered + len(body) > BUFFER_BYTES:
            if not self._overflowed:
                log.warning("redis bus: %d bytes wait for Redis; the rest is appended from SQLite", self._buffered)
            self._buffer.clear()
            self._buffered = 0
            self._overflowed = True  # until the stream has caught up from SQLite
            return
        self._buffer.append(entry)
        self._buffered += len(body)

    def status(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "stream_last_seq": self.appended,
            "behind": max(0, self.tail - (self.appended or 0)),
            "buffered_bytes": self._buffered,
            "refilled": self.refilled,
            "error": self.error,
        }

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                if self.appended is None:
                    self.appended = await stream.top(self._redis, self._key)
                    self._filled_to = 0
                    log.info("redis bus: the stream ends at seq %d, SQLite at %d", self.appended, self.tail)
                    if self.appended > self.tail:
                        log.error(
                            "redis bus: the stream %r is ahead of this database (a restored backup, or another"
                            " writer's stream?): its seqs would be reused; delete the key or use another"
                            " KILLBOARD_REDIS_STREAM",
                            self._key,
                        )
                if not self.connected:
                    self.connected, self.error, failures = True, None, 0
                await self._step()
            except (RedisError, OSError) as exc:
                if self.connected or self.error is None:
                    log.warning("redis bus: Redis unreachable (%s); kills wait in SQLite", exc)
                self.connected, self.error = False, str(exc) or type(exc).__name__
                self.appended = None  # whatever Redis holds when it is back is read again
                failures += 1
                await asyncio.sleep(backoff_delay(failures, 0.2, 5.0))

    async def _step(self) -> None:
        """Append what is due: from SQLite when the buffer does not start right after the
        stream's end, else from the buffer; wait when there is nothing."""
        assert self.appended is not None
        while self._buffer and self._buffer[0].seq <= self.appended:
            self._buffered -= len(self._buffer.popleft().body)
        needed = self._buffer[0].prev if self._buffer else self.tail
        if needed > max(self.appended, self._filled_to):
            await self._refill(needed)
            return
        if not self._buffer:
            self._overflowed = False
            self._idle.set()
            self._wake.clear()
            await self._wake.wait()
            return
        batch = [self._buffer[i] for i in range(min(BATCH, len(self._buffer)))]
        await self._append(batch)

    async def _refill(self, through: int) -> None:
        """Append stored kills after the stream's end up to `through` from SQLite, one page."""
        assert self.appended is not None
        cursor = max(self.appended, self._filled_to, through - self._maxlen)
        rows = await self._store.after(cursor, min(BATCH, through - cursor))
        rows = [r for r in rows if r.seq <= through]
        if not rows:
            self._filled_to = through  # pruned or never stored: nothing more to find below
            return
        if cursor > max(self.appended, self._filled_to):
            log.warning("redis bus: the stream ends at %d; refilling from %d (MAXLEN)", self.appended, cursor)
        cutoff = time.time() - self._live_max_age if self._live_max_age else None
        entries, prev = [], cursor
        for row in rows:
            live = cutoff is None or row.kill_time >= cutoff
            entries.append(Entry(row.seq, prev, row.body, kill_facts(ujson.loads(row.body)), live))
            prev = row.seq
        if await self._append(entries):
            self.refilled += len(entries)
            self._filled_to = max(self._filled_to, entries[-1].seq)
            if entries[-1].seq >= through:
                log.info("redis bus: the stream has caught up with SQLite at seq %d", through)

    async def _append(self, entries: Sequence[Entry]) -> bool:
        """Append in one script call if the stream still ends where we think; False (and the
        stream's real end noted) if it does not."""
        assert self.appended is not None
        stamp = time.time()
        # zlib lets go of the GIL: the bodies are compressed beside the event loop.
        compressed = await asyncio.get_running_loop().run_in_executor(None, _compress_all, entries)
        args: list[bytes | int] = [self.appended, self._maxlen]
        for entry, blob in zip(entries, compressed, strict=True):
            args.append(b"%d-0" % entry.seq)
            args.extend(stream.fields(entry, blob, stamp))
        have = int(await self._script(keys=[self._key], args=args))
        if have < 0:
            self.appended = entries[-1].seq
            return True
        # Not where we left it: Redis restarted empty or was flushed (have < ours), or our
        # previous call went through and only its answer was lost (have == what it appended).
        if have < self.appended:
            self.resets += 1
            log.warning("redis bus: the stream ends at %d, not %d (Redis lost data): refilling", have, self.appended)
        self.appended = have
        self._filled_to = 0
        return False

    async def flush(self, timeout: float) -> None:
        """Until everything handed over is in the stream, or `timeout`."""
        with suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not (self.connected and self._idle.is_set()):
                    self._wake.set()
                    await asyncio.sleep(0.02)


class _WriterCollector(Collector):
    def __init__(self, writer: StreamWriter) -> None:
        self._writer = writer

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        w = self._writer
        yield GaugeMetricFamily("killboard_bus_connected", "1 while the writer reaches Redis", w.connected)
        yield GaugeMetricFamily(
            "killboard_bus_behind", "Stored kills not yet in the stream", max(0, w.tail - (w.appended or 0))
        )
        yield CounterMetricFamily("killboard_bus_refilled_kills", "Kills appended from SQLite (refills)", w.refilled)


def _compress_all(entries: Sequence[Entry]) -> list[bytes]:
    return [_deflate.compress(e.body, 1) for e in entries]


async def writer_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: between the database and the worker, so it stops after the worker has drained."""
    config = app[config_key]
    assert config.redis_url is not None
    redis = stream.connect(config.redis_url)
    store = app[store_key]
    writer = StreamWriter(redis, store, config, tail=await store.last_seq())
    app[stored_hooks_key].append(writer.on_stored)  # the worker keeps facts for every kill (server.py)
    app[bus_status_key] = writer.status
    app[metrics_key].registry.register(_WriterCollector(writer))
    task = asyncio.create_task(writer.run(), name="killboard-bus-writer")
    yield
    await writer.flush(FLUSH_TIMEOUT)
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task
    await redis.aclose()
