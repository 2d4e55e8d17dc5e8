"""Fixtures that build the real app on a real SQLite file in a temporary folder."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from fakes import FakeEsi, player_names
from redisproc import RedisServer

from killboard.config import PROJECT_ROOT, Config
from killboard.kill.staticdata import StaticData, load_static
from killboard.server import create_app
from killboard.web.keys import pipeline_key

DATA = Path(__file__).parent / "data"
TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

Client = TestClient[web.Request, web.Application]


def load_killmails() -> list[dict[str, Any]]:
    """The 82 real ESI killmails bundled for tests, oldest kill id first."""
    files = sorted((DATA / "killmails").glob("[0-9]*.json"), key=lambda p: int(p.stem))
    return [json.loads(p.read_text()) for p in files]


@pytest.fixture(scope="session")
def static() -> StaticData:
    return load_static(PROJECT_ROOT / "data")


@pytest.fixture(scope="session")
def killmails() -> list[dict[str, Any]]:
    return load_killmails()


@pytest.fixture
def config(tmp_path: Path) -> Config:
    # The bundled kills are years old: the live age cut-off is off unless a test turns it on.
    # Tests never reach the internet: upstream is off unless a test points it at a local fake.
    return Config(db_path=tmp_path / "kb.sqlite3", ingest_token=TOKEN, live_max_age=0, upstream=False)


@pytest.fixture
def make_client(
    aiohttp_client: Callable[..., Awaitable[Client]], static: StaticData, config: Config
) -> Callable[..., Awaitable[Client]]:
    async def make(**overrides: Any) -> Client:
        return await aiohttp_client(create_app(config.with_overrides(**overrides), static))

    return make


@pytest.fixture
async def client(make_client: Callable[..., Awaitable[Client]]) -> Client:
    return await make_client()


async def settle(client: Client) -> None:
    """Until the worker has stored everything queued so far."""
    await asyncio.wait_for(client.app[pipeline_key].wait_idle(), 10)


def told(
    lines: list[str], alone: str, summary: re.Pattern[str], reason_of: Callable[[str], str]
) -> tuple[int, int, dict[str, int]]:
    """What a logs.Throttled wrote, read back: (lines as they came, starting `alone`; summaries,
    matching `summary` with groups total and detail; every event counted by its reason). Fails
    on any other line and on a summary whose counts do not add up to its total."""
    ones = [line for line in lines if line.startswith(alone)]
    matches = [m for m in map(summary.match, lines) if m is not None]
    assert len(lines) == len(ones) + len(matches), lines
    by_reason: dict[str, int] = {}
    for line in ones:
        by_reason[reason_of(line)] = by_reason.get(reason_of(line), 0) + 1
    for match in matches:
        counts = {reason: int(n) for reason, n in re.findall(r"(.+?): (\d+)(?:, |$)", match[2])}
        assert sum(counts.values()) == int(match[1]), match[0]
        for reason, n in counts.items():
            by_reason[reason] = by_reason.get(reason, 0) + n
    return len(ones), len(matches), by_reason


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 10) -> None:
    """Until `check()` is true; for conditions behind HTTP or in another process."""
    async with asyncio.timeout(timeout):
        while not await check():  # noqa: ASYNC110 - polling is the point here
            await asyncio.sleep(0.02)


@pytest.fixture
async def esi(killmails: list[dict[str, Any]]) -> AsyncIterator[tuple[FakeEsi, str]]:
    """A fake ESI on a free port that knows the bundled kills and their pilots' names."""
    fake = FakeEsi(names=player_names(killmails), killmails={km["killmail_id"]: km for km in killmails})
    url = await fake.start()
    yield fake, url
    await fake.close()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server on a free port (the bus tests); skips if the binary is missing."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def trimming_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server with small stream nodes, so that a MAXLEN ~ 10 really trims at a
    test's scale (a stream trims whole nodes only)."""
    server = RedisServer(tmp_path, ["--stream-node-max-entries", "5"])
    server.start()
    yield server
    server.stop()


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
    """A test module with `LOOPS = ("asyncio", "uvloop")` runs each test on both event loops
    (the server may run on either: KILLBOARD_LOOP); the others on asyncio's only."""
    names = getattr(getattr(item, "module", None), "LOOPS", None) or ("asyncio",)
    factories = {"asyncio": asyncio.new_event_loop}
    if "uvloop" in names:
        import uvloop

        factories["uvloop"] = uvloop.new_event_loop
    return {name: factories[name] for name in names}
