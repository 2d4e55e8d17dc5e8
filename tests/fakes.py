"""Local stand-ins for zKillboard's R2Z2 feed and ESI: small aiohttp servers speaking their formats.

Only other people's services are faked. Both record what they were asked (path, User-Agent) and
can be told to answer 404/429/5xx or slowly, to exercise the client's error handling.
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer
from aiohttp.web_response import ContentCoding

DATA = Path(__file__).parent / "data"


def r2z2_object(esi_with_hash: dict[str, Any], sequence: int, uploaded_at: int = 1_774_448_822) -> dict[str, Any]:
    """An R2Z2 object for a bundled killmail, shaped like the real one in tests/data/zkillboard/."""
    template = json.loads((DATA / "zkillboard" / "r2z2_134265477.json").read_text())
    esi = {k: v for k, v in esi_with_hash.items() if k != "killmail_hash"}
    kill_hash = esi_with_hash["killmail_hash"]
    zkb = copy.deepcopy(template["zkb"])
    zkb["hash"] = kill_hash
    zkb["href"] = f"https://esi.evetech.net/killmails/{esi['killmail_id']}/{kill_hash}/"
    zkb["totalValue"] = float(esi["killmail_id"] % 1000) * 1e6  # recognisable: zkb values win
    return {
        "killmail_id": esi["killmail_id"],
        "hash": kill_hash,
        "esi": esi,
        "zkb": zkb,
        "uploaded_at": uploaded_at,
        "sequence_id": sequence,
    }


@web.middleware
async def gzipped(request: web.Request, handler: Any) -> web.StreamResponse:
    """As ESI and zKillboard (behind Cloudflare) do: JSON gzipped for a client that accepts it.
    What was asked for and answered goes into the app's `encodings` list. A bodiless answer
    (Discord's 204 No Content) goes out as it is."""
    response = await handler(request)
    has_body = isinstance(response, web.Response) and response.body is not None
    if has_body and "gzip" in request.headers.get("Accept-Encoding", ""):
        response.enable_compression(ContentCoding.gzip)
    await response.prepare(request)
    request.app[ENCODINGS].append(
        (request.headers.get("Accept-Encoding", ""), response.headers.get("Content-Encoding", "identity"))
    )
    return response


ENCODINGS = web.AppKey("encodings", list)


async def serve(app: web.Application) -> TestServer:
    """A fake upstream on a free loopback port, gzipping its answers like the real services."""
    app.middlewares.append(gzipped)
    app[ENCODINGS] = []
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


@dataclass
class FakeR2Z2:
    """`GET /sequence.json` and `GET /{n}.json` from a dict of published sequences."""

    objects: dict[int, dict[str, Any]] = field(default_factory=dict)
    current: int = 0  # what sequence.json says
    # Scripted answers: sequence -> statuses answered (in order) before the real one.
    script: dict[int, list[int]] = field(default_factory=dict)
    # Retry-After sent with a scripted status (seconds or an HTTP-date), as R2Z2 does with its 429s;
    # a function makes it when answering (an HTTP-date counted from the answer, as a server does).
    retry_after: dict[int, str | Callable[[], str]] = field(default_factory=lambda: {429: "1"})
    requests: list[str] = field(default_factory=list)
    times: list[float] = field(default_factory=list)  # time.monotonic() of each request
    user_agents: set[str] = field(default_factory=set)
    server: TestServer | None = None

    def publish(self, sequence: int, obj: dict[str, Any]) -> None:
        self.objects[sequence] = obj
        self.current = max(self.current, sequence)

    async def _sequence(self, request: web.Request) -> web.Response:
        self._note(request)
        return web.json_response({"sequence": self.current})

    async def _object(self, request: web.Request) -> web.Response:
        self._note(request)
        seq = int(request.match_info["seq"])
        scripted = self.script.get(seq)
        if scripted:
            status = scripted.pop(0)
            value = self.retry_after.get(status)
            headers = {"Retry-After": value() if callable(value) else value} if value is not None else None
            return web.json_response({"error": "scripted"}, status=status, headers=headers)
        if seq not in self.objects:
            return web.Response(status=404, text="Not Found")
        return web.json_response(self.objects[seq])

    def _note(self, request: web.Request) -> None:
        self.requests.append(request.path)
        self.times.append(time.monotonic())
        self.user_agents.add(request.headers.get("User-Agent", ""))

    def asked(self, sequence: int) -> int:
        return self.requests.count(f"/{sequence}.json")

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/sequence.json", self._sequence)
        app.router.add_get("/{seq:\\d+}.json", self._object)
        self.server = await serve(app)
        return str(self.server.make_url("")).rstrip("/")

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()


@dataclass
class FakeEsi:
    """`POST /universe/names/`, `GET /markets/prices/`, `GET /killmails/{id}/{hash}/`."""

    names: dict[int, tuple[str, str]] = field(default_factory=dict)
    killmails: dict[int, dict[str, Any]] = field(default_factory=dict)  # id -> ESI body with killmail_hash
    prices: list[dict[str, Any]] = field(default_factory=list)
    delay: float = 0.0  # seconds before every answer
    fail_status: int | None = None  # answer every call with this status
    # Retry-After sent with a failing status (ESI's rate limiter sends it with 429), by status.
    retry_after: dict[int, str] = field(default_factory=lambda: {429: "1"})
    error_limit_remain: int = 100
    calls: list[tuple[str, Any]] = field(default_factory=list)
    user_agents: set[str] = field(default_factory=set)
    server: TestServer | None = None

    def _headers(self) -> dict[str, str]:
        return {"X-ESI-Error-Limit-Remain": str(self.error_limit_remain), "X-ESI-Error-Limit-Reset": "1"}

    async def _gate(self, request: web.Request, body: Any = None) -> web.Response | None:
        self.calls.append((request.path, body))
        self.user_agents.add(request.headers.get("User-Agent", ""))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_status is not None:
            headers = self._headers()
            if self.fail_status in self.retry_after:
                headers["Retry-After"] = self.retry_after[self.fail_status]
            return web.json_response({"error": "scripted"}, status=self.fail_status, headers=headers)
        return None

    async def _names(self, request: web.Request) -> web.Response:
        ids = await request.json()
        if (failed := await self._gate(request, ids)) is not None:
            return failed
        if not isinstance(ids, list) or len(ids) > 1000:
            return web.json_response({"error": "bad body"}, status=400, headers=self._headers())
        if any(i not in self.names for i in ids):
            # Real ESI: one invalid id fails the whole batch.
            return web.json_response(
                {"error": "Ensure all IDs are valid before resolving."}, status=404, headers=self._headers()
            )
        rows = [{"category": self.names[i][1], "id": i, "name": self.names[i][0]} for i in ids]
        return web.json_response(rows, headers=self._headers())

    async def _prices(self, request: web.Request) -> web.Response:
        if (failed := await self._gate(request)) is not None:
            return failed
        return web.json_response(self.prices, headers=self._headers())

    async def _killmail(self, request: web.Request) -> web.Response:
        if (failed := await self._gate(request)) is not None:
            return failed
        kill_id = int(request.match_info["id"])
        km = self.killmails.get(kill_id)
        if km is None or km["killmail_hash"] != request.match_info["hash"]:
            return web.json_response(
                {"error": "Invalid killmail_id and/or killmail_hash"}, status=422, headers=self._headers()
            )
        return web.json_response({k: v for k, v in km.items() if k != "killmail_hash"}, headers=self._headers())

    def name_calls(self) -> list[list[int]]:
        return [body for path, body in self.calls if path == "/universe/names/"]

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/universe/names/", self._names)
        app.router.add_get("/markets/prices/", self._prices)
        app.router.add_get("/killmails/{id:\\d+}/{hash}/", self._killmail)
        self.server = await serve(app)
        return str(self.server.make_url("")).rstrip("/")

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()


def player_names(killmails: list[dict[str, Any]]) -> dict[int, tuple[str, str]]:
    """Made-up but recognisable names for every player id in the killmails (`Character 123`)."""
    out: dict[int, tuple[str, str]] = {}
    for km in killmails:
        for party in (km["victim"], *km["attackers"]):
            for key, category in (
                ("character_id", "character"),
                ("corporation_id", "corporation"),
                ("alliance_id", "alliance"),
            ):
                if party.get(key):
                    out[party[key]] = (f"{category.title()} {party[key]}", category)
    return out
