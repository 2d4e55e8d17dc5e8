"""Local stand-ins for a Discord webhook and a JSON webhook receiver, speaking their real formats.

FakeDiscord enforces what Discord documents: a bucket of 5 requests per 2 s per webhook announced
in `X-RateLimit-*` headers, 429 with `retry_after` (and `Retry-After`) past it, 400 for a message
over Discord's limits, 404 for an unknown webhook. It records every message it accepted and every
request that came too early after a 429 (one the client did not wait out).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from aiohttp import web
from aiohttp.test_utils import TestServer
from fakes import serve

from killboard.webhooks.signed import DELIVERY_HEADER, SIGNATURE_HEADER, verify

WEBHOOK_ID, WEBHOOK_TOKEN = "1234567890", "s3cr3t-T0KEN-do-not-print"


def embed_problems(body: dict[str, Any]) -> list[str]:
    """What Discord's 400 "Invalid Form Body" would name for a webhook message."""
    problems: list[str] = []
    embeds = body.get("embeds") or []
    if len(body.get("content") or "") > 2000:
        problems.append("content over 2000")
    if len(embeds) > 10:
        problems.append("more than 10 embeds")
    if not embeds and not body.get("content"):
        problems.append("empty message")
    total = 0
    for e in embeds:
        title, desc = e.get("title", ""), e.get("description", "")
        footer = (e.get("footer") or {}).get("text", "")
        author = (e.get("author") or {}).get("name", "")
        fields = e.get("fields", [])
        if len(title) > 256:
            problems.append("title over 256")
        if len(desc) > 4096:
            problems.append("description over 4096")
        if len(fields) > 25:
            problems.append("over 25 fields")
        for f in fields:
            if len(f.get("name", "")) > 256 or not f.get("name"):
                problems.append("field name empty or over 256")
            if len(f.get("value", "")) > 1024 or not f.get("value"):
                problems.append("field value empty or over 1024")
        if len(footer) > 2048:
            problems.append("footer over 2048")
        total += len(title) + len(desc) + len(footer) + len(author)
        total += sum(len(f.get("name", "")) + len(f.get("value", "")) for f in fields)
    if total > 6000:
        problems.append(f"embeds total {total} over 6000")
    return problems


@dataclass
class _Served:
    """A fake on a free loopback port, answering POSTs to `ROUTE`."""

    ROUTE: ClassVar[str] = "/"
    server: TestServer | None = None

    async def _post(self, request: web.Request) -> web.Response:
        raise NotImplementedError

    async def start(self) -> Self:
        app = web.Application()
        app.router.add_post(self.ROUTE, self._post)
        self.server = await serve(app)
        return self

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()


@dataclass
class FakeDiscord(_Served):
    ROUTE: ClassVar[str] = "/api/webhooks/{id}/{token}"

    limit: int = 5
    window: float = 2.0
    # False: answer without X-RateLimit-* headers, so the client only learns from 429s.
    send_headers: bool = True
    messages: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[list[str]] = field(default_factory=list)
    rate_limited: int = 0  # 429s answered
    too_early: int = 0  # requests that came before a 429's retry_after had passed
    requests: int = 0
    _window_start: float = 0.0
    _count: int = 0
    _blocked_until: float = 0.0
    # Messages carrying any of these killmail ids get a 400 (Discord refusing a message).
    refuse: set[int] = field(default_factory=set)
    # Simulate a slow Discord: seconds before answering.
    delay: float = 0.0

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url(f"/api/webhooks/{WEBHOOK_ID}/{WEBHOOK_TOKEN}"))

    def kill_ids(self) -> list[int]:
        """Killmail ids of every accepted embed, in the order they arrived (from the footer)."""
        return [int(e["footer"]["text"].split()[1]) for m in self.messages for e in m["embeds"]]

    def seqs(self) -> list[int]:
        """The seq of every accepted embed (its footer reads "killmail ID · seq N")."""
        return [int(e["footer"]["text"].split()[-1]) for m in self.messages for e in m["embeds"]]

    async def _post(self, request: web.Request) -> web.Response:
        self.requests += 1
        if request.match_info["id"] != WEBHOOK_ID or request.match_info["token"] != WEBHOOK_TOKEN:
            return web.json_response({"message": "Unknown Webhook", "code": 10015}, status=404)
        now = time.monotonic()
        if now < self._blocked_until:
            self.too_early += 1
        if now - self._window_start >= self.window:
            self._window_start, self._count = now, 0
        reset_after = max(0.0, self._window_start + self.window - now)
        if self._count >= self.limit:
            self.rate_limited += 1
            self._blocked_until = max(self._blocked_until, now + reset_after)
            return web.json_response(
                {"message": "You are being rate limited.", "retry_after": round(reset_after, 3), "global": False},
                status=429,
                headers={"Retry-After": str(max(1, round(reset_after))), **self._headers(0, reset_after)},
            )
        self._count += 1
        headers = self._headers(self.limit - self._count, reset_after)
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"message": "Cannot send an empty message", "code": 50006}, status=400)
        problems = embed_problems(body)
        if any(int(e["footer"]["text"].split()[1]) in self.refuse for e in body.get("embeds", [])):
            problems.append("refused on purpose")
        if problems or "allowed_mentions" not in body:
            self.rejected.append(problems or ["no allowed_mentions"])
            return web.json_response({"message": "Invalid Form Body", "code": 50035}, status=400, headers=headers)
        self.messages.append(body)
        if self.delay:
            await asyncio.sleep(self.delay)  # posted, not yet answered: a crash now repeats it
        return web.Response(status=204, headers=headers)

    def _headers(self, remaining: int, reset_after: float) -> dict[str, str]:
        if not self.send_headers:
            return {}
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": "fakebucket",
        }


@dataclass
class FakeReceiver(_Served):
    """A JSON webhook endpoint that checks X-Killboard-Signature and records the frames it took."""

    ROUTE: ClassVar[str] = "/hook"

    secret: str | None = None
    status: int = 200  # what it answers (e.g. 503 while "down")
    frames: list[dict[str, Any]] = field(default_factory=list)
    deliveries: list[str] = field(default_factory=list)
    bad_signatures: int = 0
    delay: float = 0.0  # seconds before answering (a slow receiver)

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/hook?key=also-secret"))

    def seqs(self) -> list[int]:
        return [f["seq"] for f in self.frames]

    async def _post(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.secret is not None and not verify(self.secret, body, request.headers.get(SIGNATURE_HEADER)):
            self.bad_signatures += 1
            return web.json_response({"error": "bad signature"}, status=401)
        if self.status >= 300:
            # Error pages often echo what was asked for: the URL, a secret, must not reach our logs.
            return web.json_response({"error": "scripted", "path": request.path_qs}, status=self.status)
        self.frames.append(json.loads(body))
        self.deliveries.append(request.headers.get(DELIVERY_HEADER, ""))
        if self.delay:
            await asyncio.sleep(self.delay)  # recorded, not yet answered: a crash now repeats it
        return web.json_response({"ok": True})
