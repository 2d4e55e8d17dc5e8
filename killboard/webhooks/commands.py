"""`python app.py webhooks check` (validate the file) and `webhooks test NAME` (post one stored kill)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import replace
from pathlib import Path

import aiohttp

from .. import config as settings
from ..kill.topics import parse
from ..storage.dbtools import EXIT_USAGE, missing
from ..storage.store import Store
from .config import Webhook, WebhookConfigError, load
from .deliver import RateLimit, build_request, post_once, select

# How many of the newest stored kills `test` looks through for one its channel selects.
TEST_SEARCH = 1000


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("webhooks", help="check the webhooks file, or post a test kill to one webhook")
    sub = parser.add_subparsers(title="webhooks commands", metavar="COMMAND", required=True)
    check = sub.add_parser("check", help="validate the webhooks file (KILLBOARD_WEBHOOKS or --file); exit 1 if bad")
    check.add_argument("--file", type=Path, help="the webhooks file (default: KILLBOARD_WEBHOOKS)")
    check.set_defaults(run=_check)
    test = sub.add_parser(
        "test",
        help="post one stored kill (the newest its channel selects) to the webhook NAME; its cursor does not move",
    )
    test.add_argument("name", metavar="NAME")
    test.add_argument("--file", type=Path, help="the webhooks file (default: KILLBOARD_WEBHOOKS)")
    test.add_argument("--db", type=Path, default=argparse.SUPPRESS, help="SQLite database file")
    test.set_defaults(run=_test)


def _hooks(args: argparse.Namespace) -> tuple[settings.Config, list[Webhook]]:
    config = settings.from_args(args)
    path = args.file or config.webhooks_path
    if path is None:
        raise SystemExit("no webhooks file: set KILLBOARD_WEBHOOKS or pass --file")
    try:
        return config, load(path)
    except WebhookConfigError as exc:
        raise SystemExit(str(exc)) from None


def _check(args: argparse.Namespace) -> int:
    _, hooks = _hooks(args)
    for hook in hooks:
        print(f"{hook.name}: {hook.format}, channel {hook.channel}, max_age {hook.max_age} s")
    print(f"{len(hooks)} webhook{'s' if len(hooks) != 1 else ''}: OK")
    return 0


def _test(args: argparse.Namespace) -> int:
    config, hooks = _hooks(args)
    hook = next((h for h in hooks if h.name == args.name), None)
    if hook is None:
        known = ", ".join(h.name for h in hooks) or "none"
        raise SystemExit(f"no webhook named {args.name!r} in the file (known: {known})")
    return asyncio.run(_post_test(config, hook))


async def _post_test(config: settings.Config, hook: Webhook) -> int:
    if missing(config.db_path, "webhooks test"):
        return EXIT_USAGE
    store = await Store.open(config.db_path)
    try:
        rows = await store.latest(TEST_SEARCH)
    finally:
        await store.close()
    if not rows:
        print(f"webhook {hook.name}: the database has no stored kill to post", file=sys.stderr)
        return 1
    item = next((i for row in rows if (i := select(hook, row, config.public_url, None)) is not None), None)
    note = ""
    if item is None:  # nothing its channel selects: show the format with the newest kill anyway
        item = select(_any_channel(hook), rows[0], config.public_url, None)
        note = f" (none of the newest {len(rows)} kills matches {hook.channel!r}: sent the newest)"
    assert item is not None
    seqs, payload, headers = build_request(hook, [item])
    limit = RateLimit()
    async with aiohttp.ClientSession(headers={"User-Agent": config.user_agent}) as session:
        for _ in range(3):  # a 429 is waited out (post_once does), then asked again
            answer = await post_once(session, hook, payload, headers, limit)
            if answer.status != 429:
                break
    if 200 <= answer.status < 300:
        print(f"webhook {hook.name}: posted kill seq {seqs[0]}: HTTP {answer.status}{note}")
        return 0
    print(f"webhook {hook.name}: {answer.error}", file=sys.stderr)
    return 1


def _any_channel(hook: Webhook) -> Webhook:
    return replace(hook, channel="kills", condition=parse("kills"))
