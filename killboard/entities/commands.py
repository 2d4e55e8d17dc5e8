"""`python app.py entities rebuild`: count every stored kill into the entity figures again."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import TextIO

from .. import config as settings
from ..kill.staticdata import load_static
from ..storage.dbtools import EXIT_USAGE, missing
from ..storage.store import Store
from . import backlog


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = commands.add_parser("entities", help="entity figures: rebuild")
    sub = group.add_subparsers(title="entities commands", metavar="COMMAND", required=True)
    p = sub.add_parser(
        "rebuild",
        help="drop the entity figures and count every indexed kill in again (safe beside the server)",
        description="Drop entity_months and entity_tops and count every kill of the participant index in "
        "again, a batch a transaction. The server may keep running: kills it stores meanwhile are counted "
        "by its own writer, and figures read during the rebuild are partial until it ends.",
    )
    p.add_argument("--db", type=Path, default=argparse.SUPPRESS, help="SQLite database file (env KILLBOARD_DB)")
    p.set_defaults(run=rebuild_command)


async def _rebuild(args: argparse.Namespace, out: TextIO) -> int:
    config = settings.from_args(args)
    if missing(config.db_path, "entities rebuild"):
        return EXIT_USAGE
    static = await asyncio.to_thread(load_static, config.data_dir)
    store = await Store.open(config.db_path)
    try:
        started = time.monotonic()
        done = await backlog.rebuild(store, static)
        out.write(f"entity figures rebuilt from {done} kills in {time.monotonic() - started:.1f} s\n")
    finally:
        await store.close()
    return 0


def rebuild_command(args: argparse.Namespace, out: TextIO | None = None) -> int:
    return asyncio.run(_rebuild(args, out or sys.stdout))
