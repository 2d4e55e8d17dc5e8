"""Command line: `python app.py` serves; subcommands do one-off jobs on the same database."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence

from aiohttp import web

from . import config as settings
from .server import create_app

DESCRIPTION = """\
killboard: a live EVE Online killmail feed (WebSocket + JSON API + page).

Without a command, serves. Environment variables (flags win over them):
  KILLBOARD_HOST          address to listen on (default 127.0.0.1)
  KILLBOARD_PORT          port (default 8080)
  KILLBOARD_DB            SQLite database file (default data/killboard.sqlite3)
  KILLBOARD_INGEST_TOKEN  bearer token for POST /api/killmails (unset: ingest disabled)
  KILLBOARD_LIVE_MAX_AGE  kills older than this many seconds are stored, not pushed live
                          (default 86400; 0 = push everything)
  KILLBOARD_LOG_LEVEL     DEBUG, INFO (default), WARNING, ERROR
  KILLBOARD_WS_MAX_CLIENTS, KILLBOARD_WS_MAX_CHANNELS, KILLBOARD_WS_MAX_CHANNEL_LENGTH,
  KILLBOARD_WS_CONTROL_RATE, KILLBOARD_WS_CONTROL_BURST, KILLBOARD_WS_REPLAY_MAX,
  KILLBOARD_WS_ORIGINS    WebSocket limits (README, "Keepalive and limits")
"""


def serve(args: argparse.Namespace) -> int:
    config = settings.from_args(args)
    web.run_app(create_app(config), host=config.host, port=config.port, access_log=None, shutdown_timeout=5)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python app.py", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    settings.add_serve_arguments(parser)
    parser.set_defaults(run=serve)
    # Each job adds its own subparser here, with `set_defaults(run=<function>)`.
    parser.add_subparsers(title="commands", metavar="COMMAND")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("KILLBOARD_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return int(args.run(args) or 0)
