"""Command line: `python app.py` serves; subcommands do one-off jobs on the same database."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from . import config as settings
from . import importer
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
  KILLBOARD_UPSTREAM      on (default) or off: follow zKillboard's R2Z2 feed and use ESI
  KILLBOARD_USER_AGENT    User-Agent sent upstream: name a contact (e-mail or site)
  KILLBOARD_R2Z2_URL      default https://r2z2.zkillboard.com/ephemeral
  KILLBOARD_ESI_URL       default https://esi.evetech.net/latest
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
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_import(commands)
    return parser


def _add_import(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sub = commands.add_parser(
        "import",
        help="load killmail files into the database (works beside a running server)",
        description="Load killmails: .json (one, an array, an R2Z2 object or a RedisQ package), .jsonl, "
        "directories of those, or EVE Ref daily archives (killmails-YYYY-MM-DD.tar.bz2). Duplicates are "
        "skipped; imported kills are stored, not broadcast live. Exit status 1 if anything was rejected.",
    )
    sub.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    # SUPPRESS: an unset subcommand flag must not overwrite the same flag given before `import`.
    sub.add_argument("--db", type=Path, default=argparse.SUPPRESS, help="SQLite database file")
    sub.add_argument("--no-upstream", action="store_true", default=argparse.SUPPRESS, help="do not call ESI")
    sub.set_defaults(run=_run_import)


def _run_import(args: argparse.Namespace) -> int:
    return importer.main_sync(settings.from_args(args), args.paths)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("KILLBOARD_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return int(args.run(args) or 0)
