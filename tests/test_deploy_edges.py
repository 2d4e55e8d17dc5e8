"""deploy/ for edges: the nginx site that splits sockets (edges) from the rest (writer), in a real
nginx in front of a real writer, two edges and redis-server; the edge unit verified by systemd."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import AUTH, Client, until
from redis.asyncio import Redis
from redis.exceptions import RedisError
from redisproc import RedisServer
from serverproc import ServerProcess, free_port
from test_bus import connected, health, writer
from test_deploy import DEPLOY, NGINX, main_config

from killboard.bus.edge import create_edge_app
from killboard.config import Config


def site_config(writer_port: int, edge_ports: list[int], nginx_port: int) -> str:
    site = (DEPLOY / "nginx" / "killboard-edges.conf").read_text()
    for old in ("listen 80;", "127.0.0.1:8080;", "127.0.0.1:8091 ", "127.0.0.1:8092 "):
        assert old in site
    site = site.replace("listen 80;", f"listen 127.0.0.1:{nginx_port};").replace("listen [::]:80;", "")
    site = site.replace("127.0.0.1:8080;", f"127.0.0.1:{writer_port};")
    site = site.replace("127.0.0.1:8091 ", f"127.0.0.1:{edge_ports[0]} ")
    return site.replace("127.0.0.1:8092 ", f"127.0.0.1:{edge_ports[1]} ")


async def test_sockets_go_to_the_edges_and_the_rest_to_the_writer(
    tmp_path: Path, killmails: list[dict[str, Any]]
) -> None:
    if NGINX is None:
        pytest.skip("nginx is not installed (.ci/run installs Debian's package with apt)")
    redis = RedisServer(tmp_path)
    redis.start()
    started: list[ServerProcess] = []
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    proc: subprocess.Popen[bytes] | None = None
    try:
        main = await writer(tmp_path, redis, started, KILLBOARD_TRUSTED_PROXIES="127.0.0.1")
        edges = []
        for name in ("edge1", "edge2"):
            edge = ServerProcess(tmp_path / f"{name}.sqlite3", env={"KILLBOARD_REDIS_URL": redis.url}, args=["edge"])
            started.append(edge)
            await edge.start()
            await until(lambda edge=edge: connected(edge), 15)
            edges.append(edge)
        nginx_port = free_port()
        site = prefix / "killboard.conf"
        site.write_text(site_config(main.port, [e.port for e in edges], nginx_port))
        conf = prefix / "nginx.conf"
        conf.write_text(main_config(prefix, site))
        proc = subprocess.Popen([NGINX, "-e", str(prefix / "error.log"), "-p", str(prefix), "-c", str(conf)])
        base = f"http://127.0.0.1:{nginx_port}"
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 10
            while True:
                assert proc.poll() is None, (prefix / "error.log").read_text()
                with suppress(aiohttp.ClientError):
                    async with session.get(base + "/health") as resp:
                        if resp.status == 200:
                            assert "role" not in await resp.json()  # the writer's /health
                            break
                assert time.monotonic() < deadline, "nginx did not come up"
                await asyncio.sleep(0.05)
            async with session.get(base + "/") as resp:
                assert resp.status == 200 and resp.content_type == "text/html"  # the page: writer
            sockets = [await session.ws_connect(base.replace("http", "ws") + path) for path in ("/ws", "/ws", "/")]
            for ws in sockets:
                await ws.send_json({"action": "sub", "channel": "kills"})
                assert (await ws.receive_json(timeout=5))["action"] == "subscribed"
            counts = [(await health(p))["clients"] for p in (main, *edges)]
            assert counts[0] == 0 and sum(counts[1:]) == 3 and min(counts[1:]) >= 1  # least_conn spreads them
            async with session.post(
                base + "/api/killmails", json=killmails[0], headers={"Authorization": "Bearer bus-token"}
            ) as resp:
                assert resp.status == 202
            for ws in sockets:
                frame = await ws.receive_json(timeout=10)
                assert frame["action"] == "kill" and frame["data"]["killmail_id"] == killmails[0]["killmail_id"]
                await ws.close()
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        for p in started:
            p.stop()
        redis.stop()


def test_edge_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = (DEPLOY / "killboard-edge@.service").read_text()
    for line in ("ExecStart=/opt/killboard/.venv/bin/python app.py edge", "Environment=KILLBOARD_PORT=%i"):
        assert line in unit
    assert "ReadWritePaths" not in unit and "StateDirectory" not in unit  # an edge writes nothing
    path = tmp_path / "killboard-edge@8091.service"
    path.write_text(unit.replace("/opt/killboard/.venv/bin/python", shutil.which("python3") or "/usr/bin/python3"))
    done = subprocess.run([analyze, "verify", "--man=no", str(path)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


async def test_writer_and_edge_over_tls_with_the_acl_users_and_nothing_else_gets_in(
    tmp_path: Path,
    make_client: Callable[..., Awaitable[Client]],
    aiohttp_client: Callable[..., Awaitable[Client]],
    config: Config,
    killmails: list[dict[str, Any]],
) -> None:
    acl = (DEPLOY / "redis-users.acl").read_text()
    acl = acl.replace("CHANGE-ME-WRITER", "writer-pw").replace("CHANGE-ME-EDGE", "edge-pw")
    (tmp_path / "users.acl").write_text("\n".join(line for line in acl.splitlines() if not line.startswith("#")))
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (it makes the test's TLS certificate)")
    cert, key = tmp_path / "redis.crt", tmp_path / "redis.key"
    subject = ["-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert), *subject],
        check=True,
        capture_output=True,
        timeout=60,
    )
    redis = RedisServer(tmp_path, ["--aclfile", str(tmp_path / "users.acl")], tls=(cert, key))
    redis.start()
    try:
        assert redis.url.startswith("rediss://")  # TLS only: rediss:// and the CA in the URL
        url = redis.url.replace("rediss://", "rediss://{}@")
        main = await make_client(redis_url=url.format("killboard-writer:writer-pw"))
        edge = await aiohttp_client(
            create_edge_app(config.with_overrides(redis_url=url.format("killboard-edge:edge-pw")))
        )
        await until(lambda: _edge_reads(edge), 15)
        ws = await edge.ws_connect("/ws")
        await ws.send_json({"action": "sub", "channel": "kills"})
        assert (await ws.receive_json(timeout=5))["action"] == "subscribed"
        resp = await main.post("/api/killmails", data=json.dumps(killmails[:3]), headers=AUTH)
        assert resp.status == 202
        assert [(await ws.receive_json(timeout=10))["seq"] for _ in range(3)] == [1, 2, 3]
        await ws.send_json({"action": "sub", "channel": "solo", "since": 0})  # XRANGE
        await ws.receive_json(timeout=5)
        assert (await ws.receive_json(timeout=5))["recovered"] is True
        for user, password in (("killboard-edge", "edge-pw"), ("default", "")):
            client = Redis.from_url(url.format(f"{user}:{password}"))
            with pytest.raises(RedisError):  # an edge cannot write; nobody gets in without a password
                await client.xadd("killboard:kills", {"x": "y"})
            await client.aclose()
        plain = Redis.from_url(url.format("killboard-edge:edge-pw").replace("rediss://", "redis://").split("?")[0])
        with pytest.raises(RedisError):  # no TLS, no talk
            await plain.ping()
        await plain.aclose()
    finally:
        redis.stop()


async def _edge_reads(edge: Client) -> bool:
    return bool((await (await edge.get("/health")).json())["bus"]["connected"])
