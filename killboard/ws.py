"""The WebSocket endpoint: the spec's sub/unsub protocol on top of the hub.

Client -> server: `{"action":"sub","channel":"kills"}` / `{"action":"unsub","channel":"kills"}`.
Server -> client: `{"action":"kill","seq":N,"data":{...}}`, acks, and
`{"action":"error","message":...}` for anything it cannot use (the socket stays open).
"""

from __future__ import annotations

import logging

import ujson
from aiohttp import WSCloseCode, WSMsgType, web

from .hub import CHANNEL_ALIASES, Hub, Subscriber
from .keys import config_key, hub_key

log = logging.getLogger(__name__)


async def websocket(request: web.Request) -> web.WebSocketResponse:
    config = request.app[config_key]
    hub = request.app[hub_key]
    # compress=False: deflate would run once per client and undo "encode each kill once".
    ws = web.WebSocketResponse(
        heartbeat=config.ws_heartbeat,
        max_msg_size=config.ws_max_message,
        compress=False,
    )
    await ws.prepare(request)
    sub = hub.attach(ws, request.transport)
    try:
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                handle_text(hub, sub, msg.data)
            elif msg.type is WSMsgType.BINARY:
                error(hub, sub, "binary frames are not accepted: send JSON text frames")
            elif msg.type is WSMsgType.ERROR:
                log.info("websocket closed on a protocol error: %s", ws.exception())
    finally:
        await hub.detach(sub)
    if ws.close_code == WSCloseCode.MESSAGE_TOO_BIG:
        log.info("websocket closed: a client message exceeded %d bytes", config.ws_max_message)
    return ws


def error(hub: Hub, sub: Subscriber, message: str) -> None:
    log.info("websocket client error: %s", message)
    hub.send_json(sub, {"action": "error", "message": message})


def handle_text(hub: Hub, sub: Subscriber, text: str) -> None:
    try:
        message = ujson.loads(text)
    except ValueError as exc:
        error(hub, sub, f"not valid JSON: {exc}")
        return
    if not isinstance(message, dict):
        error(hub, sub, f"expected a JSON object, got {type(message).__name__}")
        return
    action = message.get("action")
    if action not in ("sub", "unsub"):
        error(hub, sub, f"unknown action {str(action)[:64]!r}: expected 'sub' or 'unsub'")
        return
    channel = message.get("channel")
    if not isinstance(channel, str):
        error(hub, sub, 'channel: required string, e.g. "kills"')
        return
    canonical = CHANNEL_ALIASES.get(channel)
    if canonical is None:
        error(hub, sub, f'unknown channel {channel[:64]!r}: try "kills"')
        return
    if action == "sub":
        hub.subscribe(sub, canonical)
        hub.send_json(sub, {"action": "subscribed", "channels": [channel]})
    else:
        hub.unsubscribe(sub, canonical)
        hub.send_json(sub, {"action": "unsubscribed", "channels": [channel]})
