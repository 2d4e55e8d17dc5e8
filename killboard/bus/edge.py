"""An edge process (`python app.py edge`): the WebSocket protocol, /health and /metrics, fed by
the Redis Stream instead of a database of its own.

A follower reads the stream with plain `XREAD BLOCK` from its last seq (no consumer groups:
every edge gets every kill) and hands each entry to the same `Hub.publish` the writer's pipeline
calls, with the body and match keys the writer put there: the edge never decodes or enriches a
kill, and its sockets get byte for byte the frames the writer's own sockets get. `since` replays
read the stream (killboard/bus/stream.py `StreamLog`). When Redis is away the sockets stay open
and the follower carries on from its last seq once it is back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import suppress
from typing import Any, cast

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..config import Config
from ..ingest.r2z2 import backoff_delay
from ..live.hub import Hub
from ..live.replay import Replays
from ..metrics import create_metrics, register_collector
from ..metrics import endpoint as metrics_endpoint
from ..web import api, ws
from ..web.keys import config_key, hub_key, log_key, metrics_key, replays_key, started_key
from ..web.proxy import forwarded_middleware
from . import stream
from .stream import BLOCK_MS, StreamLog

log = logging.getLogger(__name__)

# Entries taken per XREAD: one round trip for a burst, a bounded amount of memory (~0.6 MB).
READ_COUNT = 100
# How long a `since` replay waits for this edge's follower to reach the client's seq.
REACH_TIMEOUT = 2.0


class StreamFollower:
    """Follows the stream from its last seq and publishes each live kill to the hub."""

    def __init__(self, redis: Redis, hub: Hub, key: str) -> None:
        self._redis = redis
        self._hub = hub
        self._key = key
        self.last = 0  # the last seq read from the stream (and published, if live)
        self._started = False
        # Started on an empty stream: the first entry's `prev` is where the stream begins, not a gap.
        self._empty_start = False
        self._advanced = asyncio.Event()
        self.connected = False
        self.error: str | None = None
        self.entries = 0
        self.skipped = 0  # kills the stream no longer had when this edge got to them
        self.lag = 0.0  # seconds from the writer's append to this edge's publish, last entry
        self.lag_total = 0.0  # ... summed over every entry, and the largest
        self.lag_max = 0.0

    def status(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "last_seq": self.last,
            "entries": self.entries,
            "skipped": self.skipped,
            "lag_seconds": round(self.lag, 4),
            "lag_mean_seconds": round(self.lag_total / self.entries, 4) if self.entries else None,
            "lag_max_seconds": round(self.lag_max, 4),
            "lag_total_seconds": round(self.lag_total, 4),
            "error": self.error,
        }

    async def reach(self, seq: int, timeout: float = REACH_TIMEOUT) -> None:
        """Until this follower has read up to `seq`, or `timeout`."""
        with suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self.last < seq:
                    await self._advanced.wait()

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                if not self._started:
                    # A fresh edge starts at the stream's end: earlier kills are what `since` replays.
                    self.last = await stream.top(self._redis, self._key)
                    self._started = True
                    self._empty_start = self.last == 0
                    log.info("edge: following %r from seq %d", self._key, self.last)
                reply = cast(
                    list[tuple[bytes, stream.Entries]] | None,
                    await self._redis.xread({self._key: b"%d-0" % self.last}, count=READ_COUNT, block=BLOCK_MS),
                )
                if not self.connected:
                    self.connected, self.error, failures = True, None, 0
                    log.info("edge: reading the stream at seq %d", self.last)
                for _key, entries in reply or ():
                    for entry_id, values in entries:
                        self._deliver(stream.decode(entry_id, values))
            except (RedisError, OSError) as exc:
                if self.connected or self.error is None:
                    log.warning("edge: Redis unreachable (%s); sockets stay open, resuming after %d", exc, self.last)
                self.connected, self.error = False, str(exc) or type(exc).__name__
                failures += 1
                await asyncio.sleep(backoff_delay(failures, 0.2, 5.0))

    def _deliver(self, entry: stream.Raw) -> None:
        if entry.seq <= self.last:
            return
        if entry.prev > self.last and not self._empty_start:
            self._skipped(self.last, entry.prev)
        self._empty_start = False
        if entry.live:
            # The body is inflated only if some socket matches: once, for every recipient.
            self._hub.publish(entry.seq, entry.body, entry.facts)
        self.last = entry.seq
        self.entries += 1
        self.lag = max(0.0, time.time() - entry.appended_at)
        self.lag_total += self.lag
        self.lag_max = max(self.lag_max, self.lag)
        self._advanced.set()
        self._advanced = asyncio.Event()

    def _skipped(self, after: int, through: int) -> None:
        """Kills after `after` up to `through` were trimmed away (or lost with Redis) before this
        edge read them: tell every subscribed socket, with the REST call that has them."""
        self.skipped += through - after
        log.warning("edge: the stream no longer has seq %d to %d: subscribers told to fetch them", after + 1, through)
        notice = {
            "action": "skipped",
            "from": after,
            "to": through,
            "message": "this server fell behind the live feed: kills with from < seq <= to were not sent",
            "fallback": f"/api/killmails?after={after}&limit=500",
        }
        for sub in self._hub.subscribed():
            self._hub.send_json(sub, notice)


class _BusCollector(Collector):
    def __init__(self, follower: StreamFollower) -> None:
        self._follower = follower

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        f = self._follower
        yield GaugeMetricFamily("killboard_bus_connected", "1 while the edge reads the Redis stream", f.connected)
        yield GaugeMetricFamily("killboard_bus_last_seq", "Last seq read from the stream", f.last)
        yield GaugeMetricFamily(
            "killboard_bus_lag_seconds", "Seconds from the writer's append to this edge's publish", f.lag
        )
        yield CounterMetricFamily("killboard_bus_entries", "Stream entries read", f.entries)
        yield CounterMetricFamily("killboard_bus_skipped_kills", "Kills trimmed before this edge read them", f.skipped)


async def health(request: web.Request) -> web.Response:
    app = request.app
    hub = app[hub_key]
    follower = app[edge_follower_key]
    return web.json_response(
        {
            "status": "ok" if follower.connected else "degraded",
            "role": "edge",
            "uptime": round(time.monotonic() - app[started_key], 3),
            "clients": len(hub),
            "subscribed": hub.subscribed_count(),
            "deliveries": hub.deliveries,
            "slow_drops": hub.slow_drops,
            "bus": follower.status(),
            "tasks": len(asyncio.all_tasks()),
            "fds": api.open_fds(),
        }
    )


async def root(request: web.Request) -> web.StreamResponse:
    """The WebSocket also answers at `/`, as on the writer; pages and the API are the writer's."""
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return await ws.websocket(request)
    return api.json_error(404, "this is an edge process: it serves /ws only; pages and /api are on the writer")


# Here, not in killboard/web/keys.py: that module is imported by every process, and these would make
# it import redis.
edge_follower_key = web.AppKey("edge_follower", StreamFollower)
redis_key = web.AppKey("edge_redis", Redis)


async def _follow(app: web.Application) -> AsyncIterator[None]:
    config = app[config_key]
    assert config.redis_url is not None
    # Above XREAD's block time, or redis-py times the blocked read out (issues 2807, 3138).
    redis = stream.connect(config.redis_url, socket_timeout=BLOCK_MS / 1000 + 5)
    follower = StreamFollower(redis, app[hub_key], config.redis_stream)
    app[redis_key] = redis
    app[edge_follower_key] = follower
    app[log_key] = StreamLog(redis, config.redis_stream, follower)
    register_collector(
        app[metrics_key], app[hub_key], None, pipeline=lambda: None, follower=lambda: None, esi=lambda: None
    )
    app[metrics_key].registry.register(_BusCollector(follower))
    task = asyncio.create_task(follower.run(), name="killboard-edge-follower")
    yield
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task
    await redis.aclose()


def create_edge_app(config: Config) -> web.Application:
    """An edge: the writer's WebSocket protocol and limits, /health and /metrics, no database."""
    middlewares: list[Middleware] = [api.json_errors]
    if config.trusted_proxies:
        middlewares.insert(0, forwarded_middleware(config.trusted_proxies))
    app = web.Application(middlewares=middlewares)
    app[config_key] = config
    app[started_key] = time.monotonic()
    app[hub_key] = ws.make_hub(config)
    app[replays_key] = Replays(config.ws_replay_concurrency)
    app[metrics_key] = create_metrics()
    app.cleanup_ctx.append(_follow)
    app.on_shutdown.append(ws.close_sockets)
    app.router.add_get("/", root)
    app.router.add_get("/ws", ws.websocket)
    app.router.add_get("/health", health)
    if config.metrics:
        app.router.add_get("/metrics", metrics_endpoint(app[metrics_key], config.metrics_token))
    return app
