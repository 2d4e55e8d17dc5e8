"""X-Forwarded-For / X-Forwarded-Proto are believed only from configured trusted proxies."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from aiohttp import web
from conftest import AUTH

from killboard.web.proxy import client_address, forwarded_middleware, parse_networks


async def echo(request: web.Request) -> web.Response:
    return web.json_response({"remote": request.remote, "scheme": request.scheme, "url": str(request.url)})


async def echo_client(aiohttp_client: Any, trusted: list[str]) -> Any:
    app = web.Application(middlewares=[forwarded_middleware(trusted)])
    app.router.add_get("/", echo)
    return await aiohttp_client(app)


async def test_headers_from_a_trusted_proxy_are_used(aiohttp_client: Any) -> None:
    client = await echo_client(aiohttp_client, ["127.0.0.0/8"])
    resp = await client.get("/", headers={"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"})
    body = await resp.json()
    assert body["remote"] == "203.0.113.7"
    assert body["scheme"] == "https" and body["url"].startswith("https://")


async def test_headers_from_anyone_else_are_ignored(aiohttp_client: Any) -> None:
    client = await echo_client(aiohttp_client, ["10.0.0.0/8"])  # the test client is 127.0.0.1
    resp = await client.get("/", headers={"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"})
    body = await resp.json()
    assert body["remote"] == "127.0.0.1" and body["scheme"] == "http"


def test_chain_is_walked_from_the_right_past_trusted_hops_only() -> None:
    nets = parse_networks(["127.0.0.1", "10.0.0.0/8"])
    # client wrote a fake first hop; our two proxies appended the real ones
    assert client_address("127.0.0.1", ["6.6.6.6, 198.51.100.2, 10.1.2.3"], nets) == "198.51.100.2"
    assert client_address("127.0.0.1", ["garbage, 10.1.2.3"], nets) == "10.1.2.3"
    assert client_address("127.0.0.1", [], nets) == "127.0.0.1"
    with pytest.raises(ValueError, match="not an IP address"):
        parse_networks(["localhost"])


async def test_the_app_logs_the_forwarded_client(make_client: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="killboard.web.api")
    headers = {"Authorization": "Bearer wrong", "X-Forwarded-For": "203.0.113.7"}
    trusting = await make_client(trusted_proxies=("127.0.0.1",))
    assert (await trusting.post("/api/killmails", data=b"{}", headers=headers)).status == 401
    assert "from 203.0.113.7: missing or wrong token" in caplog.text
    caplog.clear()
    default = await make_client()
    assert (await default.post("/api/killmails", data=b"{}", headers=headers)).status == 401
    assert "from 127.0.0.1: missing or wrong token" in caplog.text


async def test_websocket_works_on_a_forwarded_request(make_client: Any, killmails: list[dict[str, Any]]) -> None:
    """The middleware hands the handler a clone of the request: the upgrade must still work."""
    client = await make_client(trusted_proxies=("127.0.0.1",))
    headers = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}
    for path in ("/ws", "/"):
        async with client.ws_connect(path, headers=headers) as ws:
            await ws.send_json({"action": "sub", "channel": "kills"})
            assert (await ws.receive_json(timeout=5)) == {"action": "subscribed", "channels": ["kills"]}
    async with client.ws_connect("/ws", headers=headers) as ws:
        await ws.send_json({"action": "sub", "channel": "kills"})
        await ws.receive_json(timeout=5)
        resp = await client.post("/api/killmails", data=json.dumps(killmails[0]), headers={**AUTH, **headers})
        assert resp.status == 202
        frame = await ws.receive_json(timeout=5)
        assert frame["data"]["killmail_id"] == killmails[0]["killmail_id"]
