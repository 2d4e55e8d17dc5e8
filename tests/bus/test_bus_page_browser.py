"""The live page served through the edges' nginx site (deploy/nginx/killboard-edges.conf): its socket
on an edge over a real redis-server, the page from the writer, in a real headless Chromium. An edge
that falls behind its stream's trim sends `skipped`; the page says how many kills it will not get
live, and its reload link brings them from the writer."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import ujson
from browser import launch, new_page
from conftest import until
from playwright.async_api import Browser, Page, expect
from redisproc import RedisServer
from serverproc import ServerProcess, free_port
from test_bus import Listener, edge, health, post, processes, received, writer
from test_deploy import NGINX, main_config
from test_deploy_edges import site_config

pytestmark = pytest.mark.browser
expect.set_options(timeout=15_000)

__all__ = ["processes"]  # the fixture, shared with test_bus.py


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async for b in launch():
        yield b


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    if NGINX is None:
        pytest.skip("nginx is not installed (.ci/run installs Debian's package with apt)")
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        proc.terminate()
        proc.wait(10)


async def front(tmp_path: Path, started: list[subprocess.Popen[bytes]], main: ServerProcess, edge_port: int) -> str:
    """nginx with the edges' site in front of `main` and one edge (named twice in the upstream)."""
    assert NGINX is not None
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    port = free_port()
    site = prefix / "killboard.conf"
    site.write_text(site_config(main.port, [edge_port, edge_port], port))
    conf = prefix / "nginx.conf"
    conf.write_text(main_config(prefix, site))
    proc = subprocess.Popen([NGINX, "-e", str(prefix / "error.log"), "-p", str(prefix), "-c", str(conf)])
    started.append(proc)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    async with aiohttp.ClientSession() as session:
        while True:
            assert proc.poll() is None, (prefix / "error.log").read_text()
            with suppress(aiohttp.ClientError):
                async with session.get(base + "/health") as resp:
                    if resp.status == 200:
                        return base
            assert time.monotonic() < deadline, "nginx did not come up"
            await asyncio.sleep(0.05)


async def row_ids(page: Page) -> list[int]:
    return [int(i) for i in await page.locator("#feed li.kill").evaluate_all("rows => rows.map(r => r.dataset.id)")]


async def test_the_page_says_how_many_kills_its_edge_skipped_and_a_reload_has_them(
    tmp_path: Path,
    processes: list[ServerProcess],
    nginx: list[subprocess.Popen[bytes]],
    browser: Browser,
    killmails: list[dict[str, Any]],
    trimming_redis: RedisServer,
) -> None:
    main = await writer(tmp_path, trimming_redis, processes, KILLBOARD_REDIS_MAXLEN="10")
    behind = await edge(tmp_path, trimming_redis, processes, "behind")
    base = await front(tmp_path, nginx, main, behind.port)
    listener = Listener(behind.url)  # beside the page on the same edge: what it was sent
    await listener.start()
    _, page, watch = await new_page(browser)
    await page.goto(base + "/")
    await expect(page.locator("#status")).to_have_attribute("data-state", "live")
    assert (await health(behind))["subscribed"] == 2  # the page's socket is on the edge

    await post(main, killmails[:5])
    await received([listener], 5)
    await expect(page.locator("#feed li.kill")).to_have_count(5)
    assert behind.proc is not None
    behind.proc.send_signal(signal.SIGSTOP)  # the edge stalls while the stream moves on
    try:
        for i in range(5, 60, 5):
            await post(main, killmails[i : i + 5])
        await until(lambda: _stream_at(main, 60), 20)
    finally:
        behind.proc.send_signal(signal.SIGCONT)
    await until(lambda: asyncio.sleep(0, any(m["action"] == "skipped" for m in listener.others)), 20)
    skipped = next(m for m in listener.others if m["action"] == "skipped")
    start, end = skipped["from"], skipped["to"]
    assert 5 <= start < end < 60
    await received([listener], start + 60 - end)

    notice = page.locator("#notice")
    await expect(notice).to_be_visible()
    await expect(notice).to_have_text(
        f"{end - start} kills skipped: this server fell behind the live feed. Reload for the full list."
    )
    sent = [ujson.loads(f)["data"]["killmail_id"] for f in listener.frames]
    await expect(page.locator("#feed li.kill")).to_have_count(len(sent))
    assert sorted(await row_ids(page)) == sorted(sent)  # the live rows: all but the skipped kills

    await notice.locator("a.reload").click()  # the writer renders its newest 50, skipped ones too
    await expect(page.locator("#status")).to_have_attribute("data-state", "live")
    await expect(notice).to_be_hidden()
    async with aiohttp.ClientSession() as session, session.get(base + "/api/killmails?limit=50") as resp:
        newest = [k["killmail_id"] for k in (await resp.json())["killmails"]]
    assert sorted(await row_ids(page)) == sorted(newest)
    assert set(newest) - set(sent)  # among them kills the edge never sent
    assert watch.errors == [] and watch.dialogs == []


async def _stream_at(proc: ServerProcess, seq: int) -> bool:
    return bool((await health(proc))["bus"]["stream_last_seq"] == seq)
