"""deploy/: the nginx site in front of the real server, in a real nginx; the systemd unit verified.

nginx runs as the current user with its own prefix, pid and logs in a temporary folder; only the
listen port and the upstream port of deploy/nginx/killboard.conf are changed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from serverproc import ServerProcess, free_port

from killboard.config import PROJECT_ROOT

DEPLOY = PROJECT_ROOT / "deploy"
TOKEN = "nginx-token"
NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)


def site_config(app_port: int, nginx_port: int, cache: Path, page_rate: str | None = None) -> str:
    site = (DEPLOY / "nginx" / "killboard.conf").read_text()
    if page_rate:  # many readers from one test address: the page's limit per address is raised
        assert "zone=killboard_page:10m rate=2r/s;" in site
        site = site.replace("zone=killboard_page:10m rate=2r/s;", f"zone=killboard_page:10m rate={page_rate};")
    assert "listen 80;" in site and "127.0.0.1:8080;" in site
    site = site.replace("listen 80;", f"listen 127.0.0.1:{nginx_port};")
    site = site.replace("listen [::]:80;", "")
    assert "/var/cache/killboard-nginx " in site
    site = site.replace("/var/cache/killboard-nginx ", f"{cache} ")
    return site.replace("127.0.0.1:8080;", f"127.0.0.1:{app_port};")


def main_config(prefix: Path, site: Path) -> str:
    temp = "\n".join(
        f"    {name}_temp_path {prefix / name};" for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    user = "user root;" if os.geteuid() == 0 else ""  # as root, workers would otherwise become nobody
    return f"""
{user}
worker_processes 1;
daemon off;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} warn;
events {{ worker_connections 128; }}
http {{
    # What reached the app (an upstream address), background cache updates included.
    log_format upstream '$uri $upstream_addr $upstream_cache_status';
    access_log {prefix / "access.log"} upstream;
    log_subrequest on;
{temp}
    include {site};
}}
"""


@pytest.fixture
async def proxied(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, ServerProcess]]:
    """The real server behind a real nginx; yields nginx's base URL. Indirect parameters:
    `page_rate` (the page's requests a second per address)."""
    options = getattr(request, "param", {})
    if NGINX is None:
        pytest.skip("nginx is not installed (.ci/run installs Debian's package with apt)")
    server = ServerProcess(
        tmp_path / "kb.sqlite3", env={"KILLBOARD_INGEST_TOKEN": TOKEN, "KILLBOARD_TRUSTED_PROXIES": "127.0.0.1"}
    )
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    nginx_port = free_port()
    await server.start()
    site = prefix / "killboard.conf"
    site.write_text(site_config(server.port, nginx_port, prefix / "cache", options.get("page_rate")))
    conf = prefix / "nginx.conf"
    conf.write_text(main_config(prefix, site))
    test = subprocess.run(
        [NGINX, "-t", "-e", str(prefix / "error.log"), "-p", str(prefix), "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert test.returncode == 0, test.stderr
    proc = subprocess.Popen([NGINX, "-e", str(prefix / "error.log"), "-p", str(prefix), "-c", str(conf)])
    base = f"http://127.0.0.1:{nginx_port}"
    try:
        deadline = time.monotonic() + 10
        async with aiohttp.ClientSession() as session:
            while True:
                assert proc.poll() is None, (prefix / "error.log").read_text()
                try:
                    async with session.get(base + "/health") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline, "nginx did not come up"
                await asyncio.sleep(0.05)
        yield base, server
    finally:
        proc.terminate()
        proc.wait(10)
        server.stop()


async def test_page_api_and_websocket_through_nginx(
    proxied: tuple[str, ServerProcess], killmails: list[dict[str, Any]]
) -> None:
    base, server = proxied
    async with aiohttp.ClientSession() as session:
        async with session.get(base + "/") as resp:
            assert resp.status == 200
            assert resp.content_type == "text/html"
            assert "killboard" in await resp.text()

        async with session.ws_connect(base.replace("http", "ws") + "/ws") as ws:
            await ws.send_json({"action": "sub", "channel": "kills"})
            assert (await ws.receive_json(timeout=5)) == {"action": "subscribed", "channels": ["kills"]}
            km = killmails[0]
            async with session.post(
                base + "/api/killmails", json=km, headers={"Authorization": f"Bearer {TOKEN}"}
            ) as resp:
                assert resp.status == 202
            frame = await ws.receive_json(timeout=10)
            assert frame["action"] == "kill"
            assert frame["data"]["killmail_id"] == km["killmail_id"]

        # The root serves the WebSocket too, upgrade headers and all.
        async with session.ws_connect(base.replace("http", "ws") + "/") as ws:
            await ws.send_json({"action": "sub", "channel": "kills"})
            assert (await ws.receive_json(timeout=5))["action"] == "subscribed"

        async with session.get(base + f"/api/killmails/{killmails[0]['killmail_id']}") as resp:
            assert resp.status == 200
        async with session.get(base + "/metrics") as resp:
            assert resp.status == 403  # scraped on the app's own port, never through the site
        async with session.get(server.url + "/metrics") as resp:
            assert resp.status == 200

        # A client cannot pick the address the app logs: nginx overwrites X-Forwarded-For.
        async with session.post(
            base + "/api/killmails",
            json=killmails[1],
            headers={"Authorization": "Bearer wrong", "X-Forwarded-For": "198.51.100.9"},
        ) as resp:
            assert resp.status == 401
    await asyncio.sleep(0.2)
    log = server.log.read_text()
    assert "POST /api/killmails from 127.0.0.1: missing or wrong token" in log
    assert "198.51.100.9" not in log


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = (DEPLOY / "killboard.service").read_text()
    for line in (
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "ReadWritePaths=/var/lib/killboard",
        "Restart=on-failure",
        "User=killboard",
    ):
        assert line in unit
    # verify checks the ExecStart binary exists: point it at this interpreter for the check.
    (tmp_path / "killboard.service").write_text(
        unit.replace("/opt/killboard/.venv/bin/python", shutil.which("python3") or "/usr/bin/python3")
    )
    done = subprocess.run(
        [analyze, "verify", "--man=no", str(tmp_path / "killboard.service")], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr


async def test_nginx_limits_answer_429_and_503_json(proxied: tuple[str, ServerProcess]) -> None:
    """The site's limit_req (page and API) and limit_conn (API) answer JSON with Retry-After."""
    base, _ = proxied
    async with aiohttp.ClientSession() as session:

        async def get(path: str) -> tuple[int, str, dict[str, Any] | None]:
            async with session.get(base + path, allow_redirects=False) as resp:
                body = await resp.json() if resp.content_type == "application/json" else None
                return resp.status, resp.headers.get("Retry-After", ""), body

        # The page: 40 at once. The API: 40 one after the other (4 at once would be its limit_conn).
        page = await asyncio.gather(*(get("/") for _ in range(40)))
        api = [await get("/api/killmails?limit=1") for _ in range(40)]
        for path, answers in (("/", page), ("/api/", api)):
            statuses = [status for status, _, _ in answers]
            # The burst (20) passes, the rest is refused at once, never queued.
            assert statuses.count(200) >= 10, (path, statuses)
            limited = [a for a in answers if a[0] == 429]
            assert len(limited) >= 10, (path, statuses)
            assert all(retry == "1" and body and "too many requests" in body["error"] for _, retry, body in limited)
        # /health is never limited: the checks of a load balancer or a monitor keep working.
        assert {s for s, _, _ in await asyncio.gather(*(get("/health") for _ in range(40)))} == {200}

        await asyncio.sleep(4)  # the API bucket refills (5 a second)
        # Four API requests held open (bodies that never finish arriving) use up limit_conn.
        held = []
        for _ in range(4):
            _, writer = await asyncio.open_connection("127.0.0.1", int(base.rsplit(":", 1)[1]))
            writer.write(
                b"POST /api/killmails HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n"
                b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"
            )
            await writer.drain()
            held.append(writer)
        await asyncio.sleep(0.3)
        try:
            status, retry, body = await get("/api/killmails?limit=1")
            assert status == 503 and retry == "1"
            assert body and "too many open requests" in body["error"]
        finally:
            for writer in held:
                writer.close()
        await asyncio.sleep(0.3)
        assert (await get("/api/killmails?limit=1"))[0] == 200


def app_fetches(prefix: Path, uri: str = "/") -> int:
    """Requests for `uri` that nginx sent to the app (background updates included)."""
    lines = (prefix / "access.log").read_text().splitlines()
    return sum(1 for line in lines if line.split(" ")[0] == uri and line.split(" ")[1] != "-")


@pytest.mark.parametrize("proxied", [{"page_rate": "1000r/s"}], indirect=True)
async def test_nginx_micro_cache_never_hides_a_kill_longer_than_a_second(
    proxied: tuple[str, ServerProcess], tmp_path: Path, killmails: list[dict[str, Any]]
) -> None:
    """The feed page is kept a second at most: a burst of readers costs the app one render, and a
    kill the app has stored is on every page nginx serves a second later, also after a quiet spell."""
    base, server = proxied
    prefix = tmp_path / "nginx"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as session:

        async def page(url: str = base) -> str:
            async with session.get(url + "/", headers={"Accept-Language": "en"}) as resp:
                assert resp.status == 200
                return await resp.text()

        async def store(km: dict[str, Any]) -> float:
            """Post a kill, wait until the app itself shows it; the time it was first shown."""
            async with session.post(base + "/api/killmails", json=km, headers=auth) as resp:
                assert resp.status == 202
            while f'data-id="{km["killmail_id"]}"' not in await page(server.url):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            return time.monotonic()

        await page()
        await asyncio.sleep(0.2)
        before = app_fetches(prefix)
        # 20 readers at once: the app renders once (twice if they straddle a second).
        await asyncio.gather(*(page() for _ in range(20)))
        await asyncio.sleep(0.2)
        assert app_fetches(prefix) - before <= 2

        # Readers every 50 ms for 3 s: the app is asked about once a second, not 60 times.
        before, started = app_fetches(prefix), time.monotonic()
        hidden = []
        for n, km in enumerate(killmails[:3]):
            stored = await store(km)
            while True:
                shown = f'data-id="{km["killmail_id"]}"' in await page()
                if shown:
                    break
                await asyncio.sleep(0.05)
            hidden.append(time.monotonic() - stored)
            await asyncio.sleep(0.3 * n)
        fetches, took = app_fetches(prefix) - before, time.monotonic() - started
        assert fetches <= took + 2, (fetches, took)
        assert max(hidden) <= 1.1, hidden

        # A quiet spell (the kept page is long out of date), then a kill: a second later every
        # reader sees it, the first one included (no stale page served after a quiet spell).
        await asyncio.sleep(2.5)
        km = killmails[10]
        stored = await store(km)
        await asyncio.sleep(max(0.0, stored + 1.0 - time.monotonic()))
        assert f'data-id="{km["killmail_id"]}"' in await page()
