"""Typed keys for everything the app holds: the only way handlers reach shared state."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web

from ..battles.service import Battles
from ..config import Config
from ..ingest.esi import EsiClient, NameService
from ..ingest.pipeline import OnStored, Pipeline
from ..ingest.r2z2 import Follower
from ..kill.prices import PriceBook
from ..kill.staticdata import StaticData
from ..live.hub import Hub
from ..live.replay import KillLog, Replays
from ..metrics import Metrics
from ..storage.damage import Damage
from ..storage.store import Store
from ..webhooks.service import Webhooks
from .foreign import ForeignWrites
from .reads import ReadLimits
from .recent import RecentKeys
from .viewcache import Rendering, ViewCache

config_key = web.AppKey("config", Config)
static_key = web.AppKey("static", StaticData)
prices_key = web.AppKey("prices", PriceBook)
store_key = web.AppKey("store", Store)
hub_key = web.AppKey("hub", Hub)
replays_key = web.AppKey("replays", Replays)
pipeline_key = web.AppKey("pipeline", Pipeline)
started_key = web.AppKey("started", float)
metrics_key = web.AppKey("metrics", Metrics)
reads_key = web.AppKey("reads", ReadLimits)
recent_key = web.AppKey("recent", RecentKeys)
# Rendered feed rows and pages per view and language (web/viewcache.py).
viewcache_key = web.AppKey("viewcache", ViewCache)
# Kept pages being rendered now: concurrent first views of one wait for one render (web/keptpages.py).
rendering_key = web.AppKey("rendering", Rendering)
# Polls the database for other processes' writes (web/foreign.py).
foreign_key = web.AppKey("foreign", ForeignWrites)
damage_key = web.AppKey("damage", Damage)
# Present only while upstream is on (KILLBOARD_UPSTREAM): the shared HTTP session and its users.
session_key = web.AppKey("session", aiohttp.ClientSession)
esi_key = web.AppKey("esi", EsiClient)
names_key = web.AppKey("names", NameService)
follower_key = web.AppKey("follower", Follower)
# Battles (killboard/battles): detection beside the store, the battle channels, summaries.
battles_key = web.AppKey("battles", Battles)
# Present only with KILLBOARD_WEBHOOKS set.
webhooks_key = web.AppKey("webhooks", Webhooks)
# Where a `since` replay reads: the Store here, the Redis Stream on an edge (killboard/bus).
log_key = web.AppKey("log", KillLog)
# What the worker calls for every stored kill: the hub's, and the bus writer's and webhooks' when on.
stored_hooks_key = web.AppKey[list[OnStored]]("stored_hooks")
# Present only with KILLBOARD_REDIS_URL: the bus writer's state.
bus_status_key = web.AppKey[Callable[[], dict[str, Any]]]("bus_status")
