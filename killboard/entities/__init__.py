"""Entity pages and search: figures per character, corporation, alliance, ship, group, system and
region kept in the kills' transaction, their pages and JSON, and name search. Entry point: `setup`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from aiohttp import web

from ..kill.staticdata import StaticData
from ..storage.store import Store
from .backlog import reindex
from .rows import RowStore
from .service import Entities
from .views import Handler, add_routes, entities_key, link

__all__ = ["Entities", "entities_key", "link", "reindex", "setup"]


def setup(
    app: web.Application,
    static: StaticData,
    store: Callable[[], Store],
    wrap: Callable[[str, Handler], Handler] | None = None,
    kept_rows: RowStore | None = None,
) -> None:
    """Add the routes (each through `wrap(name, handler)` when given: the web stage's view cache,
    which keeps the pages' rows too, as `kept_rows`), and a context that attaches the figures to
    the store as it opens: append it right after the database's, so it stops before the database
    closes."""
    app[entities_key] = Entities(static) if kept_rows is None else Entities(static, html=kept_rows)

    async def context(app: web.Application) -> AsyncIterator[None]:
        service = app[entities_key]
        await service.start(store())
        yield
        await service.stop()

    app.cleanup_ctx.append(context)
    if wrap is None:
        add_routes(app)
    else:
        add_routes(app, wrap)
