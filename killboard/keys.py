"""Typed keys for everything the app holds: the only way handlers reach shared state."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from .config import Config
from .esi import EsiClient, NameService
from .hub import Hub
from .metrics import Metrics
from .pipeline import Pipeline
from .prices import PriceBook
from .r2z2 import Follower
from .replay import Replays
from .staticdata import StaticData
from .store import Store

config_key = web.AppKey("config", Config)
static_key = web.AppKey("static", StaticData)
prices_key = web.AppKey("prices", PriceBook)
store_key = web.AppKey("store", Store)
hub_key = web.AppKey("hub", Hub)
replays_key = web.AppKey("replays", Replays)
pipeline_key = web.AppKey("pipeline", Pipeline)
started_key = web.AppKey("started", float)
metrics_key = web.AppKey("metrics", Metrics)
# Present only while upstream is on (KILLBOARD_UPSTREAM): the shared HTTP session and its users.
session_key = web.AppKey("session", aiohttp.ClientSession)
esi_key = web.AppKey("esi", EsiClient)
names_key = web.AppKey("names", NameService)
follower_key = web.AppKey("follower", Follower)
