"""HTML pages, rendered with aiohttp-jinja2 from templates/ (autoescaped: names come from outside)."""

from __future__ import annotations

import aiohttp_jinja2
from aiohttp import web

from .keys import store_key
from .ws import websocket


async def index(request: web.Request) -> web.StreamResponse:
    # The spec serves the WebSocket at the root too: an upgrade request gets the socket.
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return await websocket(request)
    count = await request.app[store_key].count()
    return aiohttp_jinja2.render_template("index.html", request, {"count": count})
