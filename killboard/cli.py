"""Command line: `python app.py` serves; subcommands do one-off jobs on the same database."""

from __future__ import annotations

import argparse
import asyncio
import errno
import gc
import logging
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from aiohttp import web

from . import __version__, logs
from . import config as settings
from .battles import commands as battle_commands
from .entities import backlog as entity_figures
from .entities import commands as entity_commands
from .ingest import importer
from .server import create_app
from .storage import dbtools
from .storage.sqlite import StoreUnusable
from .webhooks import commands as webhook_commands

log = logging.getLogger("killboard")
# How long a thread may hold the GIL while another waits (CPython's default is 5 ms). A fleet
# fight is enriched and encoded in threads; every database hop of a request then waits up to a
# whole interval for the loop to get the GIL back, and a /health of a few hops stalled 140-150 ms
# on a 10,000-attacker kill. At 1 ms the same bench measured 70-85 ms (issue 21, bench.bigkill).
SWITCH_INTERVAL = 0.001
# The cyclic garbage collector's thresholds (CPython's default: 700, 10, 10). A batch of 200
# kills in flight holds ~100,000 dicts and lists of enriched kills that refcounting frees when
# it is done, but the default thresholds scanned them again and again and promoted them, so
# full collections of ~190,000 objects ran every ~300 kills: 1.2-1.5 s of 5,000 kills' ~7 s of
# CPU (issue 21's ingest bench), freeing nothing. With these (and the start-up's objects frozen
# out of the scans) the same run spent ~0.2 s. Cycles are still collected: a young one once
# 50,000 more objects are alive, any after some 10 million.
GC_THRESHOLDS = (50_000, 20, 10)

DESCRIPTION = """\
killboard: a live EVE Online killmail feed (WebSocket + JSON API + page).

Without a command, serves. Environment variables (flags win over them):
  KILLBOARD_HOST          address to listen on (default 127.0.0.1)
  KILLBOARD_PORT          port (default 8080)
  KILLBOARD_DB            SQLite database file (default data/killboard.sqlite3 in a clone;
                          installed: $XDG_DATA_HOME/killboard/, else ~/.local/share/killboard/)
  KILLBOARD_INGEST_TOKEN  bearer token for POST /api/killmails (unset: ingest disabled)
  KILLBOARD_LIVE_MAX_AGE  kills older than this many seconds are stored, not pushed live
                          (default 86400; 0 = push everything)
  KILLBOARD_LOG_LEVEL     DEBUG, INFO (default), WARNING, ERROR
  KILLBOARD_LOG_FORMAT    plain (default) or json (one JSON object per line)
  KILLBOARD_LOOP          asyncio (default) or uvloop (pip install uvloop): the server's event loop
  KILLBOARD_RETENTION_DAYS  prune kills older than this many days (default 0: keep all)
  KILLBOARD_METRICS       on (default) or off: GET /metrics
  KILLBOARD_METRICS_TOKEN bearer token GET /metrics requires (unset: none)
  KILLBOARD_TRUSTED_PROXIES  addresses/networks whose X-Forwarded-For/-Proto are believed
  KILLBOARD_UPSTREAM      on (default) or off: follow zKillboard's R2Z2 feed and use ESI
  KILLBOARD_USER_AGENT    User-Agent sent upstream: name a contact (e-mail or site)
  KILLBOARD_R2Z2_URL      default https://r2z2.zkillboard.com/ephemeral
  KILLBOARD_ESI_URL       default https://esi.evetech.net/latest
  KILLBOARD_WS_MAX_CLIENTS, KILLBOARD_WS_MAX_CHANNELS, KILLBOARD_WS_MAX_CHANNEL_LENGTH,
  KILLBOARD_WS_CONTROL_RATE, KILLBOARD_WS_CONTROL_BURST, KILLBOARD_WS_REPLAY_MAX,
  KILLBOARD_WS_ORIGINS    WebSocket limits (README, "Keepalive and limits")
  KILLBOARD_WEBHOOKS      TOML file of [[webhook]] entries: kills posted to Discord or JSON webhooks
  KILLBOARD_PUBLIC_URL    this server's public address, linked from Discord embeds (/kill/{id})
  KILLBOARD_REDIS_URL     redis:// or rediss:// URL: append every stored kill to a Redis Stream
                          that `python app.py edge` processes serve sockets from (unset: no Redis)
  KILLBOARD_REDIS_STREAM, KILLBOARD_REDIS_MAXLEN  the stream's key and length (README, "Past one process")
"""


def serve(args: argparse.Namespace) -> int:
    config = settings.from_args(args)
    app = create_app(config)  # first: a bad webhooks file ends the start with its one line
    log.info("serving on http://%s:%d (database %s)", config.host, config.port, config.db_path)
    # The port first: taken or forbidden, the server says so before it opens the database or
    # calls upstream, and the error is the bind's own (not any OSError of the start).
    sockets = listen(config.host, config.port)
    sys.setswitchinterval(SWITCH_INTERVAL)  # this process only: the server's, not a library's choice
    gc.set_threshold(*GC_THRESHOLDS)
    app.on_startup.append(_freeze)  # after every cleanup_ctx's start: the static data, caches loaded
    # print=None: aiohttp's banner is not a log line and would break JSON-lines logs.
    web.run_app(app, sock=sockets, access_log=None, shutdown_timeout=5, print=None, loop=event_loop(os.environ))
    return 0


async def _freeze(_app: web.Application) -> None:
    """What the start made (static data, the battles' state, the app) lives as long as the
    process: out of every later collection's scan."""
    gc.collect()
    gc.freeze()


LOOPS = ("asyncio", "uvloop")


def event_loop(env: Mapping[str, str]) -> asyncio.AbstractEventLoop:
    """The server's event loop: asyncio's, or uvloop with KILLBOARD_LOOP=uvloop (installed
    apart: `pip install uvloop`). uvloop is not the default because it did not take less CPU per
    delivery than asyncio on the fan-out bench (docs/performance-read-send.md, "Delivery")."""
    name = (env.get("KILLBOARD_LOOP") or "asyncio").strip().lower()
    if name not in LOOPS:
        raise SystemExit(f"KILLBOARD_LOOP must be asyncio or uvloop, got {name!r}")
    if name == "uvloop":
        try:
            import uvloop
        except ImportError:
            raise SystemExit("KILLBOARD_LOOP=uvloop but uvloop is not installed (pip install uvloop)") from None
        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def listen(host: str, port: int) -> list[socket.socket]:
    """Bound, listening sockets for every address `host` resolves to (as asyncio's create_server
    would make them); SystemExit with one line when the address cannot be had."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise SystemExit(f"cannot listen on {host}:{port}: unknown host ({exc.strerror})") from None
    sockets: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # the v4 address has its own
            sock.bind(address)
            sock.listen(128)
            sock.setblocking(False)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise SystemExit(f"cannot listen on {host}:{port}: {_listen_reason(exc)}") from None
    return sockets


def _listen_reason(exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return "address already in use (another server on that port?)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE; use a higher port behind nginx)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "address not available on this machine"
    return exc.strerror or str(exc)


def build_parser(prog: str = "killboard") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"killboard {__version__}")
    settings.add_serve_arguments(parser)
    parser.set_defaults(run=serve)
    # Each job adds its own subparser here, with `set_defaults(run=<function>)`.
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_import(commands)
    _add_edge(commands)
    dbtools.add_commands(commands)  # backup, check
    webhook_commands.add_commands(commands)  # webhooks check, webhooks test NAME
    battle_commands.add_commands(commands)  # battles rebuild
    entity_commands.add_commands(commands)  # entities rebuild
    return parser


def _add_import(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sub = commands.add_parser(
        "import",
        help="load killmail files into the database (works beside a running server)",
        description="Load killmails: .json (one, an array, an R2Z2 object or a RedisQ package), .jsonl, "
        "either gzipped or bzip2ed (.json.gz, .jsonl.bz2), directories of those, or EVE Ref daily archives "
        "(killmails-YYYY-MM-DD.tar.bz2). Duplicates are skipped; imported kills are stored, not broadcast live. "
        "Exit status 1 if anything was rejected.",
    )
    sub.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    # SUPPRESS: an unset subcommand flag must not overwrite the same flag given before `import`.
    sub.add_argument("--db", type=Path, default=argparse.SUPPRESS, help="SQLite database file")
    sub.add_argument("--no-upstream", action="store_true", default=argparse.SUPPRESS, help="do not call ESI")
    sub.set_defaults(run=_run_import)


def _add_edge(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sub = commands.add_parser(
        "edge",
        help="serve WebSockets from the writer's Redis stream (KILLBOARD_REDIS_URL), no database",
        description="An edge process: the WebSocket protocol, /health and /metrics, fed by the Redis Stream the "
        "writer (`python app.py` with KILLBOARD_REDIS_URL) appends to. Same settings as the writer.",
    )
    sub.add_argument("--host", default=argparse.SUPPRESS, help="address to listen on (env KILLBOARD_HOST)")
    sub.add_argument("--port", type=int, default=argparse.SUPPRESS, help="port to listen on (env KILLBOARD_PORT)")
    # Accepted so an edge can be started with the writer's very command line; an edge has no database.
    sub.add_argument("--db", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub.add_argument("--no-upstream", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub.set_defaults(run=_run_edge)


def _run_edge(args: argparse.Namespace) -> int:
    config = settings.from_args(args)
    if not config.redis_url:
        raise SystemExit("python app.py edge needs KILLBOARD_REDIS_URL (the Redis the writer appends to)")
    from .bus.edge import create_edge_app  # only here: the embedded default never imports redis

    log.info("edge serving on http://%s:%d (stream %r)", config.host, config.port, config.redis_stream)
    web.run_app(
        create_edge_app(config),
        host=config.host,
        port=config.port,
        access_log=None,
        shutdown_timeout=5,
        print=None,
        loop=event_loop(os.environ),
    )
    return 0


def _run_import(args: argparse.Namespace) -> int:
    # Imported kills join battles and count into the entity figures in their own transactions.
    prepare = (battle_commands.with_battles, entity_figures.with_figures)
    gc.set_threshold(*GC_THRESHOLDS)  # an import's batches are the server's (see GC_THRESHOLDS)
    return importer.main_sync(settings.from_args(args), args.paths, prepare=prepare)


def main(argv: Sequence[str] | None = None, prog: str = "killboard") -> int:
    """The `killboard` console script, `python -m killboard` and `python app.py` (`prog` names the
    command in --help and usage errors)."""
    args = build_parser(prog).parse_args(argv)
    logs.setup(os.environ)
    try:
        return int(args.run(args) or 0)
    except StoreUnusable as exc:
        # One line and exit 1, at once: systemd's Restart=on-failure and the operator both see it.
        raise SystemExit(str(exc)) from None
