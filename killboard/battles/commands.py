"""`python app.py battles rebuild`: recompute every battle from the stored kills."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from .. import config as settings
from ..kill.staticdata import StaticData, load_static
from ..storage.dbtools import EXIT_USAGE, missing
from ..storage.store import Store
from .service import Battles, Rebuilt, rebuild


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("battles", help="battles: rebuild them from the stored kills")
    sub = parser.add_subparsers(title="battles commands", metavar="COMMAND", required=True)
    run = sub.add_parser(
        "rebuild",
        help="recompute every battle from the stored kills (ids are kept where their kills stay together)",
    )
    run.add_argument("--db", type=Path, default=argparse.SUPPRESS, help="SQLite database file")
    run.set_defaults(run=_rebuild)


def _rebuild(args: argparse.Namespace) -> int:
    config = settings.from_args(args)
    if missing(config.db_path, "battles rebuild"):
        return EXIT_USAGE

    async def go() -> Rebuilt:
        store = await Store.open(config.db_path)
        try:
            return await rebuild(store, load_static(config.data_dir))
        finally:
            await store.close()

    started = time.monotonic()
    done = asyncio.run(go())
    took = time.monotonic() - started
    print(f"battles rebuilt: {done.battles} battles of {done.kills} kills in {took:.1f} s")
    if done.late:
        print(f"{done.late} kills stored while it ran were detected in its write")
    return 0


async def with_battles(store: Store, static: StaticData) -> Callable[[], Awaitable[None]]:
    """For an import: kills it stores join battles in their own transaction, as the server's do."""
    service = await Battles.start(store, static)
    return service.stop
