"""All webhooks of one server: their deliverer tasks, the shared HTTP session, /health and metrics."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..ingest.pipeline import OnStored, Stored
from ..storage.store import Store
from .config import Webhook
from .deliver import Deliverer, WebhookMetrics

log = logging.getLogger(__name__)


@dataclass(eq=False, slots=True)
class Webhooks:
    """The running webhooks: one deliverer task each, woken by the store, sharing one HTTP session."""

    deliverers: list[Deliverer]
    session: aiohttp.ClientSession
    store: Store
    on_stored: list[OnStored]
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    async def start(
        cls,
        hooks: Sequence[Webhook],
        store: Store,
        on_stored: list[OnStored],
        registry: CollectorRegistry,
        public_url: str | None,
        user_agent: str,
    ) -> Webhooks:
        session = aiohttp.ClientSession(headers={"User-Agent": user_agent})
        metrics = WebhookMetrics.create(registry)
        deliverers = [Deliverer(hook, store, session, metrics, public_url) for hook in hooks]
        service = cls(deliverers, session, store, on_stored)
        on_stored.append(service.stored)
        registry.register(_Collector(deliverers))
        for d in deliverers:
            service.tasks.append(asyncio.create_task(service._run(d), name=f"webhook-{d.hook.name}"))
        return service

    def stored(self, stored: Stored) -> None:
        """The pipeline's hook: every deliverer learns the newest stored seq."""
        for d in self.deliverers:
            d.notify(stored.seq)

    async def _run(self, deliverer: Deliverer) -> None:
        # A bug in one webhook must not end the others, nor end silently: log it, retry later.
        while True:
            try:
                await deliverer.run()
                return  # disabled
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook %s: deliverer failed; restarting it in 30 s", deliverer.hook.name)
                deliverer.state = "backing off"
                await asyncio.sleep(30)

    def health(self) -> list[dict[str, Any]]:
        return [d.health() for d in self.deliverers]

    async def stop(self) -> None:
        with suppress(ValueError):
            self.on_stored.remove(self.stored)
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with suppress(asyncio.CancelledError):
                await task
        await self.session.close()


class _Collector(Collector):
    """Per-webhook cursor, backlog and lag, read at scrape time."""

    def __init__(self, deliverers: list[Deliverer]) -> None:
        self._deliverers = deliverers

    def collect(self) -> Iterator[Metric]:
        cursor = GaugeMetricFamily("killboard_webhook_cursor", "Last seq delivered", labels=["webhook"])
        behind = GaugeMetricFamily("killboard_webhook_behind", "Stored seqs after the cursor", labels=["webhook"])
        lag = GaugeMetricFamily(
            "killboard_webhook_lag_seconds", "How long the webhook has had kills left to post", labels=["webhook"]
        )
        up = GaugeMetricFamily("killboard_webhook_enabled", "0 once disabled by a 401/403/404", labels=["webhook"])
        for d in self._deliverers:
            name = [d.hook.name]
            cursor.add_metric(name, d.cursor)
            behind.add_metric(name, max(0, d.head - d.cursor))
            lag.add_metric(name, d.lag_seconds())
            up.add_metric(name, 0 if d.state == "disabled" else 1)
        yield from (cursor, behind, lag, up)
