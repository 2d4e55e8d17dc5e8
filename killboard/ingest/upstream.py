"""Everything that talks to zKillboard and ESI, started and stopped together (server.py's one cleanup_ctx).

One shared aiohttp session carries the configured User-Agent to both services; the R2Z2
follower, the daily price refresh and the late name filler run as background tasks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from .. import __version__
from ..config import Config
from ..kill.prices import PriceBook
from ..storage.store import Store
from .esi import EsiClient, NameService, refresh_prices
from .pipeline import Pipeline
from .r2z2 import Follower

log = logging.getLogger(__name__)

# Seconds between rounds of the task that fills in names of kills broadcast without them.
NAME_FILL_EVERY = 30.0


def new_session(user_agent: str) -> aiohttp.ClientSession:
    # sock_read bounds a stalled upstream; total bounds everything else about one call.
    timeout = aiohttp.ClientTimeout(total=30, sock_connect=10, sock_read=20)
    # Compressed answers (ESI and zKillboard both gzip JSON): aiohttp asks for them by default;
    # said here so that stays true, and so nothing this project cannot decode is asked for.
    headers = {"User-Agent": user_agent, "Accept-Encoding": "gzip, deflate"}
    return aiohttp.ClientSession(headers=headers, timeout=timeout)


@dataclass(slots=True)
class Upstream:
    """The running link to zKillboard and ESI: one shared session and the tasks that use it."""

    session: aiohttp.ClientSession
    esi: EsiClient
    names: NameService
    follower: Follower
    pipeline: Pipeline
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    def start(cls, config: Config, store: Store, pipeline: Pipeline, prices: PriceBook) -> Upstream:
        session = new_session(config.user_agent)
        esi = EsiClient(session, config.esi_url, max_bytes=config.max_body_bytes)
        names = NameService(esi, store, config.names_wait)
        follower = Follower(
            session,
            config.r2z2_url,
            store,
            pipeline,
            wait=config.r2z2_wait,
            rate=config.r2z2_rate,
            backoff_min=config.backoff_min,
            backoff_max=config.backoff_max,
            max_bytes=config.max_body_bytes,
        )
        pipeline.resolve_names = names.resolve
        pipeline.fetch_killmail = esi.killmail
        log.info(
            "upstream on: following %s, ESI at %s, User-Agent %r", config.r2z2_url, config.esi_url, config.user_agent
        )
        if config.user_agent == Config().user_agent:
            log.warning(
                "KILLBOARD_USER_AGENT is not set: zKillboard and ESI ask for a contact in the User-Agent;"
                " set e.g. KILLBOARD_USER_AGENT='killboard/%s (you@example.com)'",
                __version__,
            )
        jobs: list[Coroutine[Any, Any, None]] = [
            follower.run(),
            refresh_prices(esi, store, prices, config.prices_every),
            names.run_filler(NAME_FILL_EVERY),
        ]
        tasks = [asyncio.create_task(job, name=f"killboard-upstream-{i}") for i, job in enumerate(jobs)]
        return cls(session, esi, names, follower, pipeline, tasks)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with suppress(asyncio.CancelledError):
                await task
        self.pipeline.resolve_names = None
        self.pipeline.fetch_killmail = None
        await self.names.close()
        await self.session.close()
