"""Retry-After from upstream (seconds or an HTTP-date) is honoured by the R2Z2 follower and the
ESI client: the local fakes send it as zKillboard and ESI do, and the next request waits for it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from email.utils import formatdate
from typing import Any

import aiohttp
import pytest
from conftest import Client, until
from fakes import FakeEsi, FakeR2Z2, r2z2_object

from killboard.ingest.esi import EsiClient, EsiError
from killboard.ingest.retry_after import MAX_RETRY_AFTER, retry_after

# Backoff far below the Retry-After values used: only the header can explain a long wait.
FAST = {"r2z2_wait": 0.05, "r2z2_rate": 1000.0, "backoff_min": 0.05, "backoff_max": 0.2}


def test_the_two_forms_and_nonsense() -> None:
    now = 1_700_000_000.0
    assert retry_after("2") == 2.0
    assert retry_after(" 120 ") == 120.0
    assert retry_after(formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30.0)
    assert retry_after(formatdate(now - 30, usegmt=True), now=now) == 0.0  # already past
    assert retry_after("-5") == 0.0
    assert retry_after("99999999") == MAX_RETRY_AFTER  # a day-long stop on one header's word: no
    for nonsense in (None, "", "soon", "nan", "inf", "Wed, 99 Foo 2015 07:28:00 GMT"):
        assert retry_after(nonsense) is None


@pytest.fixture
async def feed() -> AsyncIterator[FakeR2Z2]:
    fake = FakeR2Z2()
    await fake.start()
    yield fake
    await fake.close()


@pytest.mark.parametrize("form", ["seconds", "http-date"])
async def test_r2z2_429_waits_as_long_as_retry_after_says(
    make_client: Callable[..., Awaitable[Client]], feed: FakeR2Z2, killmails: list[dict[str, Any]], form: str
) -> None:
    feed.publish(100, r2z2_object(killmails[0], 100))
    feed.script[100] = [429]
    # An HTTP-date has whole seconds: 3 s ahead of the answer is at least 2 s after it (made when
    # answering: counted from the test's start, a slow app start ate into it under load).
    feed.retry_after = {429: "2" if form == "seconds" else lambda: formatdate(time.time() + 3, usegmt=True)}
    assert feed.server is not None
    url = str(feed.server.make_url("")).rstrip("/")
    client = await make_client(upstream=True, r2z2_url=url, esi_url=url, **FAST)
    await until(lambda: asyncio.sleep(0, feed.asked(100) >= 2), timeout=15)
    first, second = [t for p, t in zip(feed.requests, feed.times, strict=True) if p == "/100.json"][:2]
    assert second - first >= 1.9  # it was 0.84 s: backoff alone, the header ignored
    await client.close()


@pytest.mark.parametrize("status", [503, 429])
async def test_esi_pauses_every_call_for_retry_after(killmails: list[dict[str, Any]], status: int) -> None:
    km = killmails[0]
    fake = FakeEsi(killmails={km["killmail_id"]: km})
    fake.fail_status = status
    # 503 (downtime) with an HTTP-date 3 s ahead (whole seconds: at least 2 s); 429 in seconds.
    fake.retry_after = {503: formatdate(time.time() + 3, usegmt=True), 429: "2"}
    url = await fake.start()
    try:
        async with aiohttp.ClientSession() as session:
            esi = EsiClient(session, url)
            with pytest.raises(EsiError):
                await esi.killmail(km["killmail_id"], km["killmail_hash"])
            fake.fail_status = None  # back, but it asked us to wait
            started = time.monotonic()
            body = await esi.killmail(km["killmail_id"], km["killmail_hash"])
            assert body["killmail_id"] == km["killmail_id"]
            assert time.monotonic() - started >= 1.9
            assert len(fake.calls) == 2
    finally:
        await fake.close()
