"""Prometheus metrics: one registry per app (never the library's global one, so two apps in one
process, as in the tests, never share counters), and GET /metrics in the text format.

Counters the code increments live in `Metrics`; values the app already keeps (queue depth,
sockets, deliveries) are read at scrape time by `_AppCollector`, so the hot paths do not pay
twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .auth import bearer_matches
from .logs import client

log = logging.getLogger(__name__)

# Batch commits take ~1-50 ms on a small VPS; the tail buckets catch a disk in trouble.
COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass(frozen=True, slots=True)
class Metrics:
    registry: CollectorRegistry
    kills_ingested: Counter  # labels: source (http, r2z2, import ...): accepted into the inbox
    kills_duplicate: Counter  # labels: source
    kills_rejected: Counter  # labels: reason (invalid, no_esi_body, queue_full, enrich_failed)
    kills_stored: Counter
    batch_commit_seconds: Histogram
    kills_pruned: Counter


def create_metrics() -> Metrics:
    registry = CollectorRegistry(auto_describe=True)
    return Metrics(
        registry=registry,
        kills_ingested=Counter(
            "killboard_kills_ingested", "Kills accepted for processing, by source", ["source"], registry=registry
        ),
        kills_duplicate=Counter(
            "killboard_kills_duplicate",
            "Kills received again (already stored or waiting), by source",
            ["source"],
            registry=registry,
        ),
        kills_rejected=Counter(
            "killboard_kills_rejected", "Kills refused or dropped, by reason", ["reason"], registry=registry
        ),
        kills_stored=Counter("killboard_kills_stored", "Kills committed to the database", registry=registry),
        batch_commit_seconds=Histogram(
            "killboard_batch_commit_seconds",
            "Time to commit one batch of kills",
            buckets=COMMIT_BUCKETS,
            registry=registry,
        ),
        kills_pruned=Counter("killboard_kills_pruned", "Kills removed by retention", registry=registry),
    )


# What the collector reads of the parts it reports on, as protocols: the pipeline holds a Metrics,
# so this module must not import it (nor the hub, follower or ESI client above it); data and
# imports flow one way (ingest -> store -> hub -> sockets), metrics below them all.


class QueueView(Protocol):
    @property
    def maxsize(self) -> int: ...

    nbytes: int  # the inbox payloads of the kills it holds (ingest/pipeline.py KillQueue)
    max_bytes: int

    def qsize(self) -> int: ...


class PipelineView(Protocol):
    @property
    def queue(self) -> QueueView: ...


class HubView(Protocol):
    @property
    def deliveries(self) -> int: ...

    @property
    def slow_drops(self) -> int: ...

    def __len__(self) -> int: ...

    def subscribed_count(self) -> int: ...


class FollowerStateView(Protocol):
    @property
    def sequence(self) -> int | None: ...

    @property
    def last_kill_at(self) -> float | None: ...

    @property
    def kills(self) -> int: ...

    @property
    def skipped(self) -> int: ...


class FollowerView(Protocol):
    @property
    def state(self) -> FollowerStateView: ...


class EsiView(Protocol):
    @property
    def errors(self) -> Mapping[str, int]: ...

    @property
    def errors_remain(self) -> int | None: ...


class _AppCollector(Collector):
    """Values the running app already keeps, read when Prometheus scrapes."""

    def __init__(
        self,
        hub: HubView,
        db_path: Path | None,
        pipeline: Callable[[], PipelineView | None],
        follower: Callable[[], FollowerView | None],
        esi: Callable[[], EsiView | None],
    ) -> None:
        self._hub = hub
        self._db_path = db_path
        # Started with the app (and the upstream ones only when it is on): looked up at each scrape.
        self._pipeline = pipeline
        self._follower = follower
        self._esi = esi

    def collect(self) -> Iterator[Metric]:
        pipeline = self._pipeline()
        if pipeline is not None:
            yield GaugeMetricFamily("killboard_queue_depth", "Kills waiting for the worker", pipeline.queue.qsize())
            yield GaugeMetricFamily("killboard_queue_capacity", "Size of the worker queue", pipeline.queue.maxsize)
            yield GaugeMetricFamily(
                "killboard_queue_bytes", "Payload bytes of the kills the worker holds", pipeline.queue.nbytes
            )
            yield GaugeMetricFamily(
                "killboard_queue_bytes_capacity", "Bound of the worker queue in bytes", pipeline.queue.max_bytes
            )
        hub = self._hub
        yield GaugeMetricFamily("killboard_websocket_connected", "Open WebSocket connections", len(hub))
        yield GaugeMetricFamily(
            "killboard_websocket_subscribed", "WebSocket connections subscribed to a channel", hub.subscribed_count()
        )
        yield CounterMetricFamily("killboard_websocket_deliveries", "Kill frames queued to subscribers", hub.deliveries)
        yield CounterMetricFamily(
            "killboard_websocket_slow_drops", "Clients closed for reading too slowly (1013)", hub.slow_drops
        )
        if self._db_path is not None:  # None on an edge: it has no database
            size = GaugeMetricFamily("killboard_database_bytes", "Size of the database files", labels=["file"])
            for label, path in (("main", self._db_path), ("wal", Path(f"{self._db_path}-wal"))):
                try:
                    size.add_metric([label], path.stat().st_size)
                except OSError:
                    size.add_metric([label], 0)
            yield size
        yield from self._upstream()

    def _upstream(self) -> Iterator[Metric]:
        follower = self._follower()
        if follower is not None:
            state = follower.state
            if state.sequence is not None:
                yield GaugeMetricFamily(
                    "killboard_upstream_sequence", "Next zKillboard R2Z2 sequence to read", state.sequence
                )
            if state.last_kill_at is not None:
                yield GaugeMetricFamily(
                    "killboard_upstream_lag_seconds",
                    "Seconds since the upload time of the last kill taken from R2Z2",
                    max(0.0, time.time() - state.last_kill_at),
                )
            yield CounterMetricFamily("killboard_upstream_kills", "Kills taken from R2Z2", state.kills)
            yield CounterMetricFamily(
                "killboard_upstream_skipped_sequences", "R2Z2 sequences skipped (expired cursor)", state.skipped
            )
        esi = self._esi()
        if esi is not None:
            errors = CounterMetricFamily("killboard_esi_errors", "Failed ESI calls, by kind", labels=["kind"])
            for kind in ("network", "rate_limited", "http_5xx", "oversized"):
                errors.add_metric([kind], esi.errors.get(kind, 0))
            yield errors
            if esi.errors_remain is not None:
                yield GaugeMetricFamily(
                    "killboard_esi_error_limit_remaining", "ESI's X-ESI-Error-Limit-Remain", esi.errors_remain
                )


def register_collector(
    metrics: Metrics,
    hub: HubView,
    db_path: Path | None,
    pipeline: Callable[[], PipelineView | None],
    follower: Callable[[], FollowerView | None],
    esi: Callable[[], EsiView | None],
) -> None:
    metrics.registry.register(_AppCollector(hub, db_path, pipeline, follower, esi))


def endpoint(metrics: Metrics, token: str | None) -> Callable[[web.Request], Awaitable[web.Response]]:
    """GET /metrics; with KILLBOARD_METRICS_TOKEN set, only with `Authorization: Bearer <token>`."""

    async def handler(request: web.Request) -> web.Response:
        if token is not None and not bearer_matches(request.headers.get("Authorization", ""), token):
            log.info("GET /metrics from %s: missing or wrong token", request.remote, extra=client(request.remote))
            return web.json_response(
                {"error": "missing or wrong token: send 'Authorization: Bearer <KILLBOARD_METRICS_TOKEN>'"},
                status=401,
            )
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return handler
