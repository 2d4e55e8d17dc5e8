"""Command line: `python app.py` serves; subcommands do one-off jobs on the same database."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence

from aiohttp import web

from . import config as settings
from . import dbtools, logs
from .server import create_app

log = logging.getLogger("killboard")

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
  KILLBOARD_LOG_FORMAT    plain (default) or json (one JSON object per line)
  KILLBOARD_RETENTION_DAYS  prune kills older than this many days (default 0: keep all)
  KILLBOARD_METRICS       on (default) or off: GET /metrics
  KILLBOARD_METRICS_TOKEN bearer token GET /metrics requires (unset: none)
  KILLBOARD_TRUSTED_PROXIES  addresses/networks whose X-Forwarded-For/-Proto are believed
"""


def serve(args: argparse.Namespace) -> int:
    config = settings.from_args(args)
    log.info("serving on http://%s:%d (database %s)", config.host, config.port, config.db_path)
    # print=None: aiohttp's banner is not a log line and would break JSON-lines logs.
    web.run_app(create_app(config), host=config.host, port=config.port, access_log=None, shutdown_timeout=5, print=None)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python app.py", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    settings.add_serve_arguments(parser)
    parser.set_defaults(run=serve)
    # Each job adds its own subparser here, with `set_defaults(run=<function>)`.
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    dbtools.add_commands(commands)  # backup, check
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.setup(os.environ)
    return int(args.run(args) or 0)
