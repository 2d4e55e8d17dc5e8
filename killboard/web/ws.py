"""The WebSocket endpoint: the spec's sub/unsub protocol, channels, resume, ping, and limits.

`?lang=en` (or a list, `?lang=de,en`) cuts names down to those languages; permessage-deflate is
negotiated with clients that offer it (killboard/live/wire.py).
Client -> server: `{"action":"sub","channel":C}` (optionally with `"since":N`),
`{"action":"unsub","channel":C}`, `{"action":"ping"}`.
Server -> client: `{"action":"kill","seq":N,"data":{...}}`, acks, `{"action":"replay",...}`,
`{"action":"pong","time":...}`, and `{"action":"error","message":...}` for anything it cannot
use (the socket stays open, unless the client floods: close 1008).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import ujson
from aiohttp import WSCloseCode, WSMsgType, web

from ..battles.live import BadBattleChannel
from ..battles.live import parse as battle_channel
from ..config import Config
from ..kill.frames import encode
from ..kill.langs import BadLang, parse_langs
from ..kill.topics import BadChannel, parse
from ..live.hub import Hub
from ..live.subscriber import Subscriber
from ..live.wire import DeflateResponse
from .api import json_error
from .keys import battles_key, config_key, hub_key, log_key, replays_key

log = logging.getLogger(__name__)

MAX_SINCE = 2**63 - 1
# Client mistakes logged per socket; after that one line says the rest are not, so a client that
# sends bad messages in a loop cannot fill the log (the error frames still go to it).
LOGGED_CLIENT_ERRORS = 4
# A sub with `since` reads up to ws_replay_max stored kills: it counts as this many messages.
REPLAY_COST = 10


@dataclass(slots=True)
class Bucket:
    """Token bucket for one socket's control messages. `strikes` counts messages over the limit
    since the client last slowed down; past `burst` of them it is flooding."""

    rate: float
    burst: int
    tokens: float = 0.0
    stamp: float = field(default_factory=time.monotonic)
    strikes: int = 0

    def __post_init__(self) -> None:
        self.tokens = float(self.burst)

    def take(self, cost: int = 1) -> str:
        """One of: ok, over (first message over the limit: warn), drop (ignore it), flood (close)."""
        if self.rate <= 0:
            return "ok"
        now = time.monotonic()
        self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= cost:
            self.tokens -= cost
            if self.tokens >= self.burst / 2:
                self.strikes = 0  # calmed down: a later burst gets a fresh warning
            return "ok"
        self.strikes += 1
        if self.strikes == 1:
            return "over"
        return "flood" if self.strikes > self.burst else "drop"


def make_hub(config: Config) -> Hub:
    """The socket hub with its limits: one definition for the writer (server.py) and an edge
    (bus/edge.py), so both serve sockets alike."""
    return Hub(
        config.ws_send_queue,
        config.ws_close_timeout,
        config.ws_replay_max,
        send_buffer=config.ws_send_buffer,
        deflate_level=config.ws_deflate_level,
        sub_budget=config.ws_sub_bytes,
        sub_total=config.ws_sub_total,
    )


async def close_sockets(app: web.Application) -> None:
    """on_shutdown: every socket gets 1001 (each with a time limit) before the app's cleanups run."""
    await app[hub_key].close_all()


def origin_allowed(request: web.Request, allowed: tuple[str, ...]) -> bool:
    """Browsers send Origin; bots usually do not. Same-origin pages are always welcome."""
    origin = request.headers.get("Origin")
    if origin is None or not allowed:
        return True
    origin = origin.rstrip("/")
    return origin in allowed or urlsplit(origin).netloc == request.host


async def websocket(request: web.Request) -> web.StreamResponse:
    config = request.app[config_key]
    hub = request.app[hub_key]
    if not origin_allowed(request, config.ws_allowed_origins):
        hub.closings.log(
            logging.INFO,
            "403 origin not allowed",
            "websocket refused: origin %r is not allowed",
            request.headers.get("Origin", "")[:200],
        )
        return json_error(403, "origin not allowed: this server only accepts sockets from its allowed origins")
    try:
        lang = parse_langs(request.query.get("lang"))
    except BadLang as exc:
        return json_error(400, str(exc))
    # Not aiohttp's compress=True: that deflates once per client and undoes "encode each kill
    # once". DeflateResponse negotiates the extension; the hub deflates each kill once for all.
    # max_msg_size + 1: aiohttp refuses a message of max_msg_size bytes and more; ours may be
    # exactly ws_max_message bytes long.
    ws = DeflateResponse(
        compress=config.ws_deflate,
        heartbeat=config.ws_heartbeat,
        max_msg_size=config.ws_max_message + 1,
    )
    await ws.prepare(request)
    if len(hub) >= config.ws_max_clients:
        hub.closings.log(
            logging.WARNING,
            "1013 too many connections",
            "websocket refused: %d sockets open, the limit is %d",
            len(hub),
            config.ws_max_clients,
        )
        await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"try again later: too many connections")
        hub.linger(request.protocol)
        return ws
    sub = hub.attach(ws, request.transport, lang=lang, deflate=int(ws.compress))
    bucket = Bucket(config.ws_control_rate, config.ws_control_burst)
    try:
        async for msg in ws:
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                if msg.type is WSMsgType.ERROR:
                    problem = ws.exception()
                    hub.closings.log(
                        logging.INFO, "protocol error", "websocket closed on a protocol error: %s", problem
                    )
                continue
            if sub.dropped:
                continue  # closing: its writer is sending the close frame
            verdict = bucket.take()
            if verdict == "over":
                limit = f"{config.ws_control_rate:g} per second (bursts of {config.ws_control_burst})"
                error(hub, sub, f"too many messages: the limit is {limit}; messages over it are ignored")
                continue
            if verdict == "drop":
                continue
            if verdict == "flood":
                hub.close(sub, WSCloseCode.POLICY_VIOLATION, b"too many messages")
                continue
            if msg.type is WSMsgType.BINARY:
                error(hub, sub, "binary frames are not accepted: send JSON text frames")
                continue
            try:
                await handle_text(request.app, hub, sub, msg.data, bucket)
            except Exception:  # a bug: this message fails, the socket and the server go on
                if sub.client_errors < LOGGED_CLIENT_ERRORS:
                    log.exception("websocket message failed: %r", msg.data[:200])
                error(hub, sub, "internal error: this message was not processed")
    finally:
        hub.linger(request.protocol)  # counts until the connection is gone; aborted if it hangs
        battles = request.app.get(battles_key)
        if battles is not None and battles.channels is not None:
            battles.channels.detach(sub)
        await hub.detach(sub)
        if sub.client_errors > LOGGED_CLIENT_ERRORS:
            hub.closings.log(
                logging.INFO,
                "closed after client errors",
                "websocket client closed after %d errors (%d not logged)",
                sub.client_errors,
                sub.client_errors - LOGGED_CLIENT_ERRORS,
            )
    if ws.close_code == WSCloseCode.MESSAGE_TOO_BIG:
        biggest = config.ws_max_message
        hub.closings.log(
            logging.INFO, "1009 message too big", "websocket closed: a client message exceeded %d bytes", biggest
        )
    return ws


def _kind(message: str) -> str:
    """What a summary counts an error under: its message up to the first colon or quote (the
    part that names the mistake, not what the client sent)."""
    return message.split(":", 1)[0].split("'", 1)[0].split('"', 1)[0].strip()[:60] or "error"


def error(hub: Hub, sub: Subscriber, message: str, **extra: Any) -> None:
    """Tell the client what was wrong; log it, unless this socket has had its share of lines."""
    sub.client_errors += 1
    kind = _kind(message)
    if sub.client_errors < LOGGED_CLIENT_ERRORS:
        hub.client_errors.log(logging.INFO, kind, "websocket client error: %s", message)
    elif sub.client_errors == LOGGED_CLIENT_ERRORS:
        hub.client_errors.log(
            logging.INFO, kind, "websocket client error: %s (further errors of this client are not logged)", message
        )
    hub.send_json(sub, {"action": "error", "message": message, **extra})


async def handle_text(app: web.Application, hub: Hub, sub: Subscriber, text: str, bucket: Bucket) -> None:
    try:
        message = ujson.loads(text)
    except ValueError as exc:
        error(hub, sub, f"not valid JSON: {exc}")
        return
    if not isinstance(message, dict):
        error(hub, sub, f"expected a JSON object, got {type(message).__name__}")
        return
    try:
        encode(message)  # what cannot be encoded back (a lone surrogate) must not reach a reply
    except UnicodeEncodeError:
        error(hub, sub, "invalid string: a lone UTF-16 surrogate (\\ud800-\\udfff) is not a character")
        return
    action = message.get("action")
    if action == "ping":
        hub.send_behind_kills(sub, {"action": "pong", "time": round(time.time(), 3)})
        return
    if action not in ("sub", "unsub"):
        error(hub, sub, f"unknown action {str(action)[:64]!r}: expected 'sub', 'unsub' or 'ping'")
        return
    channel = message.get("channel")
    if not isinstance(channel, str):
        error(hub, sub, 'channel: required string, e.g. "kills"')
        return
    config: Config = app[config_key]
    try:
        battle_id = battle_channel(channel)
    except BadBattleChannel as exc:
        error(hub, sub, str(exc), channel=channel[:80])
        return
    if battle_id is not None:
        await handle_battle(app, hub, sub, message, action, channel, battle_id, bucket)
        return
    try:
        condition = parse(channel, config.ws_max_channel_length)
    except BadChannel as exc:
        error(hub, sub, str(exc), channel=channel[:80])
        return
    if action == "unsub":
        hub.unsubscribe(sub, condition)
        hub.send_json(sub, {"action": "unsubscribed", "channels": [channel]})
        return
    since = message.get("since")
    if since is not None and (type(since) is not int or not 0 <= since <= MAX_SINCE):
        error(hub, sub, "since: must be a non-negative integer (the seq of the last kill you have)", channel=channel)
        return
    if condition not in sub.channels and len(sub.channels) >= config.ws_max_channels:
        error(
            hub,
            sub,
            f"too many channels: at most {config.ws_max_channels} per socket; unsub some first",
            channel=channel[:80],
        )
        return
    if since is not None and bucket.take(REPLAY_COST - 1) != "ok":
        error(hub, sub, f"too many replays: a sub with since counts as {REPLAY_COST} messages", channel=channel)
        return
    refused = hub.subscribe(sub, condition)
    if refused is not None:
        error(hub, sub, refused, channel=channel[:80])
        return
    hub.send_json(sub, {"action": "subscribed", "channels": [channel]})
    if since is not None:
        await app[replays_key].run(hub, app[log_key], sub, condition, channel, since, config.ws_replay_max)


async def handle_battle(
    app: web.Application,
    hub: Hub,
    sub: Subscriber,
    message: dict[str, Any],
    action: str,
    channel: str,
    battle_id: int,
    bucket: Bucket,
) -> None:
    """`battles` and `battle:<id>` (killboard/battles/live.py): sub, unsub, since as for kills."""
    battles = app.get(battles_key)
    if battles is None or battles.channels is None:
        error(hub, sub, f"channel {channel!r} is not served here: battles are followed on the main server")
        return
    channels = battles.channels
    if action == "unsub":
        channels.unsubscribe(sub, battle_id)
        hub.send_json(sub, {"action": "unsubscribed", "channels": [channel]})
        return
    since = message.get("since")
    if since is not None and (type(since) is not int or not 0 <= since <= MAX_SINCE):
        error(hub, sub, "since: must be a non-negative integer (the seq of the last frame you have)", channel=channel)
        return
    config: Config = app[config_key]
    if len(sub.channels) + channels.channels_of(sub) >= config.ws_max_channels:
        error(hub, sub, f"too many channels: at most {config.ws_max_channels} per socket; unsub some first")
        return
    if since is not None and bucket.take(REPLAY_COST - 1) != "ok":
        error(hub, sub, f"too many replays: a sub with since counts as {REPLAY_COST} messages", channel=channel)
        return
    channels.subscribe(sub, battle_id)
    hub.send_json(sub, {"action": "subscribed", "channels": [channel]})
    if since is not None:
        await channels.resume(sub, battle_id, channel, since)
