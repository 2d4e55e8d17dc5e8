"""Upstream settings: environment and flags, the off switch, and the User-Agent warning."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import pytest
from conftest import Client, until
from fakes import FakeR2Z2

from killboard import __version__
from killboard import config as settings
from killboard.cli import build_parser
from killboard.web.keys import follower_key, session_key


def test_environment_and_flags() -> None:
    env = {
        "KILLBOARD_UPSTREAM": "off",
        "KILLBOARD_R2Z2_URL": "http://127.0.0.1:1/feed/",
        "KILLBOARD_ESI_URL": "http://127.0.0.1:2/esi",
        "KILLBOARD_USER_AGENT": "kb (me@example.invalid)",
    }
    config = settings.from_env(env)
    assert (config.upstream, config.r2z2_url, config.esi_url, config.user_agent) == (
        False,
        "http://127.0.0.1:1/feed",
        "http://127.0.0.1:2/esi",
        "kb (me@example.invalid)",
    )
    assert settings.from_env({}).upstream is True  # on by default
    args = build_parser().parse_args(["--no-upstream"])
    assert settings.from_args(args, {}).upstream is False
    with pytest.raises(SystemExit, match="KILLBOARD_UPSTREAM must be on or off"):
        settings.from_env({"KILLBOARD_UPSTREAM": "maybe"})


def test_import_subcommand_keeps_flags_given_before_it() -> None:
    args = build_parser().parse_args(["--db", "x.sqlite3", "--no-upstream", "import", "a.json", "b/"])
    config = settings.from_args(args, {})
    assert str(config.db_path) == "x.sqlite3" and config.upstream is False
    assert [str(p) for p in args.paths] == ["a.json", "b"]


async def test_off_means_no_session_and_no_follower(client: Client) -> None:
    app = client.server.app
    assert session_key not in app and follower_key not in app
    assert (await (await client.get("/health")).json())["upstream"] is None


async def test_default_user_agent_names_this_version_and_is_warned_about(
    make_client: Callable[..., Awaitable[Client]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="killboard.ingest.upstream")
    feed = FakeR2Z2()
    url = await feed.start()
    try:
        # ESI goes to a closed loopback port: nothing leaves the machine.
        await make_client(upstream=True, r2z2_url=url, esi_url="http://127.0.0.1:9", backoff_min=5.0)
        await until(lambda: asyncio.sleep(0, bool(feed.requests)))
    finally:
        await feed.close()
    # zKillboard and ESI ask for the client's name and version; the contact is the operator's to add.
    assert feed.user_agents == {f"killboard/{__version__} (self-hosted EVE killmail feed; contact not configured)"}
    assert any("KILLBOARD_USER_AGENT is not set" in r.message for r in caplog.records)


def test_configuration_page_shows_the_default_user_agent() -> None:
    page = (settings.PROJECT_ROOT / "docs" / "configuration.md").read_text()
    assert settings.Config().user_agent.replace(__version__, "<version>") in page
