"""The app factory: wires config, static data, store, pipeline, hub and routes together."""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import suppress

import aiohttp_jinja2
import jinja2
from aiohttp import web
from aiohttp.typedefs import Middleware

from . import entities
from .battles.service import Battles
from .config import Config, resource_dir
from .ingest.offload import Offload
from .ingest.pipeline import OnStored, Pipeline
from .ingest.queue import KillQueue
from .ingest.upstream import Upstream
from .kill.codec import renderer
from .kill.prices import price_book
from .kill.staticdata import StaticData, load_static
from .live.replay import Replays, StoreLog
from .metrics import create_metrics, register_collector
from .metrics import endpoint as metrics_endpoint
from .storage import damage
from .storage.maintenance import maintain
from .storage.store import Store
from .web import api, assets, battles, keptpages, pages, ws
from .web.foreign import ForeignWrites
from .web.httpzip import compress_responses, use_fast_zlib
from .web.keys import (
    battles_key,
    config_key,
    damage_key,
    esi_key,
    follower_key,
    foreign_key,
    hub_key,
    log_key,
    metrics_key,
    names_key,
    pipeline_key,
    prices_key,
    reads_key,
    recent_key,
    rendering_key,
    replays_key,
    session_key,
    started_key,
    static_key,
    store_key,
    stored_hooks_key,
    viewcache_key,
    webhooks_key,
)
from .web.proxy import forwarded_middleware
from .web.reads import ReadLimits
from .web.recent import RecentKeys
from .web.viewcache import Rendering, ViewCache
from .webhooks import config as webhooks_config
from .webhooks.service import Webhooks

log = logging.getLogger(__name__)

# How long a stop waits for the worker to store what is queued; anything left stays in the
# inbox and is processed on the next start, so this bounds shutdown time, not durability.
# A stop has 5 s in all: up to 2.5 s closing sockets (the worker keeps draining meanwhile),
# then this.
DRAIN_TIMEOUT = 2.0


async def _database(app: web.Application) -> AsyncIterator[None]:
    store = await Store.open(app[config_key].db_path, render=renderer(app[static_key], app[prices_key]))
    app[store_key] = store
    app[log_key] = StoreLog(store)
    store.on_changed.append(app[viewcache_key].changed)  # kept pages forget kills rewritten or pruned
    store.on_named.append(app[viewcache_key].named)  # and rows that showed a pilot nameless
    yield
    await store.close()


async def _index_backlog(app: web.Application) -> AsyncIterator[None]:
    """Kills stored before the participant index existed are indexed beside the running server.
    Started after the battles and the entity figures have attached their writers to the store,
    so those kills reach them too (store.index_backlog calls every writer). Then kills indexed
    by an older enrichment are looked over (entities.reindex). Meanwhile the match keys of the
    newest kills are learned, so the first filtered page need not."""
    store = app[store_key]

    async def run() -> None:
        try:
            if done := await store.index_backlog():
                log.info("participant index: %d kills stored before it are indexed", done)
            if done := await entities.reindex(store, app[static_key]):
                app[battles_key].forget()  # summaries kept from the old rows
                log.info("participant index: %d kills that named a weapon as a ship are indexed again", done)
        except (sqlite3.Error, OSError):
            log.exception("participant index: indexing older kills failed; it resumes at the next start")

    backlog = asyncio.create_task(run(), name="killboard-index-backlog")
    env = aiohttp_jinja2.get_env(app)
    learn = asyncio.create_task(_learn_recent(app[recent_key], store, backlog, env), name="killboard-recent-keys")
    yield
    for task in (backlog, learn):
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


async def _learn_recent(recent: RecentKeys, store: Store, backlog: asyncio.Task[None], env: jinja2.Environment) -> None:
    # The templates are compiled now, in a thread beside the rest, not by the first reader
    # (~15 ms of a first page's ~60); the keys are learned as early as before, not after it.
    compiling = asyncio.ensure_future(asyncio.to_thread(pages.compile_templates, env))
    try:
        # After the index backlog's first steps (all of it, when there is little): both read.
        await asyncio.wait({backlog}, timeout=1.0)
        try:
            await recent.refresh(store)
        except (sqlite3.Error, OSError, ValueError) as exc:
            # A damaged database says so in /health; here one line is enough.
            log.warning("recent keys: learning at start failed (%s); the first filtered page tries again", exc)
        try:
            await compiling
        except (jinja2.TemplateError, OSError) as exc:
            log.warning("templates: compiling at start failed (%s); each page compiles its own", exc)
    finally:
        compiling.cancel()  # stopped early (a shutdown): nobody waits for it


async def _battles(app: web.Application) -> AsyncIterator[None]:
    """Battles are detected in the kills' transaction and followed over the socket."""
    service = await Battles.start(app[store_key], app[static_key], app[hub_key], app[config_key].ws_replay_max)
    app[battles_key] = service
    app[stored_hooks_key].append(service.on_stored)
    warming = asyncio.create_task(battles.warm(service), name="killboard-battles-warm")  # /battles' summaries
    yield
    warming.cancel()
    with suppress(asyncio.CancelledError):
        await warming
    await service.stop()


async def _foreign_writes(app: web.Application) -> AsyncIterator[None]:
    """Another process's writes to the database (names, rewrites, a battles rebuild) empty the
    caches of rendered pages and battle summaries (web/foreign.py)."""
    watch = ForeignWrites(app[store_key], [app[viewcache_key].forget_all, app[battles_key].elsewhere])
    app[foreign_key] = watch
    watch.open()
    try:
        await watch.check()  # the version at start: only later commits count
        task = asyncio.create_task(watch.run(), name="killboard-foreign-writes")
        yield
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
    finally:
        watch.close()


async def _worker(app: web.Application) -> AsyncIterator[None]:
    config = app[config_key]
    pipeline = Pipeline(
        store=app[store_key],
        static=app[static_key],
        prices=app[prices_key],
        queue=KillQueue(config.queue_size, config.queue_bytes),
        batch_size=config.batch_size,
        queue_full_wait=config.queue_full_wait,
        live_max_age=config.live_max_age,
        metrics=app[metrics_key],
        on_stored=app[stored_hooks_key],  # the same list: hooks appended by later contexts count too
        facts_for_all=config.redis_url is not None,  # the bus stores match keys with every kill
        store_alone=True,  # a kill posted alone skips the inbox (Pipeline._store_alone)
    )
    # Fleet fights go to a process of their own, started on the first one (ingest/offload.py).
    offload = pipeline.offload = Offload(config.data_dir)
    app[store_key].render_big = functools.partial(offload.render, app[prices_key])
    app[pipeline_key] = pipeline
    worker = asyncio.create_task(pipeline.run(), name="killboard-worker")
    recovery = asyncio.create_task(pipeline.recover(), name="killboard-recovery")
    yield
    recovery.cancel()
    with suppress(asyncio.CancelledError, TimeoutError):
        await asyncio.wait_for(pipeline.wait_idle(), DRAIN_TIMEOUT)
    worker.cancel()
    with suppress(asyncio.CancelledError):
        await worker
    await offload.close()


async def _maintenance(app: web.Application) -> AsyncIterator[None]:
    """The database upkeep task lives between the database opening and closing."""
    config = app[config_key]
    upkeep = maintain(
        app[store_key],
        config.retention_days,
        config.maintenance_interval,
        config.prune_batch,
        config.vacuum_pages,
        app[metrics_key],
        app[damage_key],
    )
    task = asyncio.create_task(upkeep, name="killboard-maintenance")
    yield
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task


async def _upstream(app: web.Application) -> AsyncIterator[None]:
    """zKillboard's feed, ESI names and prices, while KILLBOARD_UPSTREAM is on."""
    link = Upstream.start(app[config_key], app[store_key], app[pipeline_key], app[prices_key])
    app[session_key], app[esi_key], app[names_key], app[follower_key] = (
        link.session,
        link.esi,
        link.names,
        link.follower,
    )
    yield
    await link.stop()


def _webhooks(hooks: list[webhooks_config.Webhook]) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        config = app[config_key]
        service = await Webhooks.start(
            hooks,
            app[store_key],
            app[stored_hooks_key],
            app[metrics_key].registry,
            config.public_url,
            config.user_agent,
        )
        app[webhooks_key] = service
        yield
        await service.stop()

    return context


def create_app(config: Config, static: StaticData | None = None) -> web.Application:
    """Build the application. `static` may be passed in to share one loaded copy (tests)."""
    use_fast_zlib()
    found = damage.Damage()
    middlewares: list[Middleware] = [compress_responses, api.json_errors, damage.middleware(found)]
    if config.trusted_proxies:
        middlewares.insert(0, forwarded_middleware(config.trusted_proxies))
    app = web.Application(client_max_size=config.max_body_bytes, middlewares=middlewares)
    app[config_key] = config
    app[damage_key] = found
    app[started_key] = time.monotonic()
    app[static_key] = static if static is not None else load_static(config.data_dir)
    app[prices_key] = price_book(app[static_key])
    app[recent_key] = RecentKeys(pages.FILTER_SCAN)
    app[viewcache_key] = ViewCache()
    app[rendering_key] = Rendering()
    app[reads_key] = ReadLimits(streams=config.max_large_reads, deadline=config.read_deadline)
    app[hub_key] = ws.make_hub(config)
    stored_hooks: list[OnStored] = [app[hub_key].on_stored]  # the hub first; battles, bus, webhooks append
    app[stored_hooks_key] = stored_hooks
    app[replays_key] = Replays(config.ws_replay_concurrency)
    # Order matters: cleanups run in reverse, so the worker stops before the database closes.
    app.cleanup_ctx.append(_database)
    # Entity figures and search (killboard/entities): attached to the store as it opens.
    entities.setup(app, app[static_key], lambda: app[store_key], keptpages.entity_routes, app[viewcache_key])
    app.cleanup_ctx.append(damage.check_ctx(found, config.db_path))  # pages damaged mid-file: /health says so
    app.cleanup_ctx.append(_battles)  # before the worker: it writes battles with every batch
    app.cleanup_ctx.append(_index_backlog)  # after every writer kept beside the kills
    app.cleanup_ctx.append(_foreign_writes)  # after the battles: it empties their summaries too
    if config.redis_url:
        from .bus.writer import writer_ctx  # only then: the embedded default never imports redis

        app.cleanup_ctx.append(writer_ctx)  # stops after the worker has drained into it
    app.cleanup_ctx.append(_worker)
    app.cleanup_ctx.append(_maintenance)
    if config.upstream:
        app.cleanup_ctx.append(_upstream)  # after the worker: stops first
    app.on_shutdown.append(ws.close_sockets)
    app[metrics_key] = create_metrics()
    if config.webhooks_path is not None:
        try:
            hooks = webhooks_config.load(config.webhooks_path)
        except webhooks_config.WebhookConfigError as exc:
            raise SystemExit(f"KILLBOARD_WEBHOOKS: {exc}") from None  # one line, exit 1, before serving
        app.cleanup_ctx.append(_webhooks(hooks))  # after the database: stops before it closes
    register_collector(
        app[metrics_key],
        app[hub_key],
        config.db_path,
        pipeline=lambda: app.get(pipeline_key),
        follower=lambda: app.get(follower_key),
        esi=lambda: app.get(esi_key),
    )

    pages.setup_templates(app)
    app.on_response_prepare.append(pages.security_headers)
    app.router.add_get("/", pages.index)
    app.router.add_get("/kill/{killmail_id:[0-9]{1,18}}", pages.kill_detail)
    app.router.add_get("/ws", ws.websocket)
    # Battle pages and JSON answered from the view cache while unchanged (web/keptpages.py).
    # Each with the query names its handler reads (the only ones it sees).
    kept, battles_stamp, battle_stamp = keptpages.kept, keptpages.battles_stamp, keptpages.battle_stamp
    app.router.add_get("/battles", kept(battles.list_page, battles_stamp, ("cursor",)))
    app.router.add_get("/battle/{battle_id:[0-9]{1,18}}", kept(battles.battle_page, battle_stamp))
    app.router.add_get("/api/battles", kept(battles.list_battles, battles_stamp, battles.LIST_READS))
    app.router.add_get("/api/battles/{battle_id}", kept(battles.get_battle, battle_stamp, ("side.",)))
    app.router.add_post("/api/killmails", api.post_killmails)
    app.router.add_get("/api/killmails", api.list_killmails)
    app.router.add_get("/api/killmails/{killmail_id}", api.get_killmail)
    app.router.add_get("/health", api.health)
    app.router.add_get("/static/{name}", assets.handler(assets.load(resource_dir("static"))))
    if config.metrics:
        app.router.add_get("/metrics", metrics_endpoint(app[metrics_key], config.metrics_token))
    return app
