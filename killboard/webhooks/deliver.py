"""One webhook's deliverer: stored kills after its cursor, matched by its channel, posted in order.

At-least-once: the cursor moves (in SQLite) only after the receiver said 2xx, so a crash can
repeat the one message in flight and nothing else. Rate limits are the receiver's own: Discord's
`X-RateLimit-*` headers say how many requests are left in the bucket and when it refills, and a
429's `retry_after` (or `Retry-After`) says how long to wait; 5xx and network errors back off
exponentially with jitter; 401/403/404 mean the webhook is gone or its token is wrong, so it is
disabled (one log line, /health) instead of hammered (Discord bans an IP after 10,000 invalid
requests in 10 minutes).
"""

from __future__ import annotations

import asyncio
import io
import logging
import random
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import ujson
from prometheus_client import CollectorRegistry, Counter
from yarl import URL

from ..kill.frames import encode
from ..kill.topics import ALL, kill_facts
from ..storage.rows import StoredKill
from ..storage.store import Store
from . import cursor, discord, signed
from .config import Webhook

log = logging.getLogger(__name__)

# Stored kills read (and rendered) per query: three full Discord messages of a broad channel, and
# a bound on memory when a page is all fleet fights (~1 MiB of JSON each).
PAGE = 30
POLL = 5.0  # seconds between looks at the store without a wake-up (kills another process stored)
REQUEST_TIMEOUT = 20.0
MAX_RESPONSE = 64 * 1024  # bytes of a response body read: enough for any error message
DISABLING = (401, 403, 404)
LARGE_BODY = 1 << 20  # a kill frame of a fleet fight with ~1,000 attackers passes this


@dataclass(frozen=True, slots=True)
class WebhookMetrics:
    posts: Counter  # labels: webhook (successful requests)
    kills: Counter  # labels: webhook (kills delivered)
    failures: Counter  # labels: webhook, kind (network, http_5xx, rate_limited, rejected, disabled)
    retries: Counter  # labels: webhook, reason (network, http_5xx, rate_limited)

    @classmethod
    def create(cls, registry: CollectorRegistry) -> WebhookMetrics:
        return cls(
            posts=Counter("killboard_webhook_posts", "Webhook requests answered 2xx", ["webhook"], registry=registry),
            kills=Counter("killboard_webhook_kills", "Kills delivered to a webhook", ["webhook"], registry=registry),
            failures=Counter(
                "killboard_webhook_failures",
                "Webhook requests that failed, by kind",
                ["webhook", "kind"],
                registry=registry,
            ),
            retries=Counter(
                "killboard_webhook_retries",
                "Webhook requests retried, by reason",
                ["webhook", "reason"],
                registry=registry,
            ),
        )


@dataclass(slots=True)
class RateLimit:
    """The receiver's bucket as its headers last described it; never a hard-coded rate."""

    clock: Callable[[], float] = time.monotonic
    remaining: int | None = None
    reset_at: float = 0.0  # when the bucket refills (clock time)
    blocked_until: float = 0.0  # after a 429

    def update(self, headers: Mapping[str, str]) -> None:
        now = self.clock()
        try:
            if "X-RateLimit-Remaining" in headers:
                self.remaining = int(headers["X-RateLimit-Remaining"])
            if "X-RateLimit-Reset-After" in headers:
                self.reset_at = now + float(headers["X-RateLimit-Reset-After"])
        except ValueError:
            self.remaining = None  # unreadable headers: rely on 429s

    def block(self, seconds: float) -> None:
        self.blocked_until = max(self.blocked_until, self.clock() + seconds)

    def delay(self) -> float:
        """Seconds to wait before the next request may go."""
        now = self.clock()
        wait = self.blocked_until - now
        if self.remaining == 0 and self.reset_at > now:
            wait = max(wait, self.reset_at - now)
        return max(0.0, wait)

    def spend(self) -> None:
        """One request sent: count it against the bucket until the answer says otherwise."""
        if self.remaining is not None and self.remaining > 0:
            self.remaining -= 1


def retry_after(headers: Mapping[str, str], body: bytes) -> float:
    """How long a 429 asks us to wait: the body's `retry_after` (Discord, seconds), else the
    `Retry-After` header, else 1 s."""
    try:
        value = ujson.loads(body).get("retry_after")
        if isinstance(value, int | float) and value >= 0:
            return float(value)
    except (ValueError, AttributeError):
        pass
    try:
        return max(0.0, float(headers.get("Retry-After", "")))
    except ValueError:
        return 1.0


def describe(exc: BaseException, url: str) -> str:
    """An exception as one line for logs and /health, with the webhook's URL (a secret) cut out."""
    return scrub(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, url)


def scrub(text: str, url: str) -> str:
    """`text` on one line, at most 300 characters, without the URL or its path (a receiver's error
    page may echo them)."""
    parsed = URL(url)
    for secret in sorted({url, url.split("://", 1)[-1], parsed.path_qs, parsed.path}, key=len, reverse=True):
        if len(secret) > 1:
            text = text.replace(secret, "<url>")
    return " ".join(text.split())[:300]


@dataclass(slots=True)
class Answer:
    status: int  # 0: no answer (network error, timeout)
    error: str | None = None


async def post_once(
    session: aiohttp.ClientSession, hook: Webhook, payload: bytes, headers: dict[str, str], limit: RateLimit
) -> Answer:
    """One request, after whatever wait the bucket asks for; reads the bucket's new state."""
    if (wait := limit.delay()) > 0:
        await asyncio.sleep(wait)
    limit.spend()
    # aiohttp warns that bytes over 1 MiB block the loop while written; a stream does not.
    data: bytes | io.BytesIO = payload if len(payload) <= LARGE_BODY else io.BytesIO(payload)
    try:
        async with session.post(
            hook.url, data=data, headers=headers, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
        ) as resp:
            body = await resp.content.read(MAX_RESPONSE)
            limit.update(resp.headers)
            if resp.status == 429:
                limit.block(retry_after(resp.headers, body))
            error = (
                None
                if resp.status < 300
                else scrub(f"HTTP {resp.status}: {body[:400].decode('utf-8', 'replace')}", hook.url)
            )
            return Answer(resp.status, error)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return Answer(0, describe(exc, hook.url))


@dataclass(slots=True)
class Item:
    """A stored kill this webhook will post: its seq and what goes into a request."""

    seq: int
    kill_json: bytes
    embed: dict[str, Any] | None = None
    wants_mention: bool = False


def select(hook: Webhook, row: StoredKill, public_url: str | None, now: float | None) -> Item | None:
    """The stored kill as this webhook posts it, or None when its channel or max_age leaves it out
    (`now` None: no age check)."""
    if now is not None and hook.max_age and row.kill_time < now - hook.max_age:
        return None
    if hook.format != "discord" and hook.condition.keys == {ALL}:
        return Item(row.seq, row.body)  # every kill, as stored: no need to decode it (~0.2 ms a kill)
    kill = ujson.loads(row.body)
    if not hook.condition.matches(kill_facts(kill)):
        return None
    if hook.format != "discord":
        return Item(row.seq, row.body)
    wants = hook.mention is not None and float(kill.get("total_value") or 0) >= hook.mention_min_value
    return Item(row.seq, row.body, discord.build_embed(row.seq, kill, public_url), wants)


def build_request(hook: Webhook, items: list[Item]) -> tuple[tuple[int, ...], bytes, dict[str, str]]:
    """The next request of a webhook from the front of `items`: (seqs it carries, body, headers).
    Discord: as many embeds as fit in one message; json: one kill frame."""
    if hook.format == "discord":
        message = discord.pack(
            ((i.seq, i.embed or {}, i.wants_mention) for i in items), hook.allowed_mentions(), hook.mention
        )
        return message.seqs, encode(message.body), {"Content-Type": "application/json"}
    payload = signed.body(items[0].seq, items[0].kill_json)
    return (items[0].seq,), payload, signed.headers(hook.name, items[0].seq, payload, hook.secret)


@dataclass(eq=False, slots=True)
class Deliverer:
    """The task behind one webhook."""

    hook: Webhook
    store: Store
    session: aiohttp.ClientSession
    metrics: WebhookMetrics
    public_url: str | None = None
    cursor: int = 0
    head: int = 0  # the newest seq the store told us about
    state: str = "starting"  # starting, idle, delivering, backing off, disabled
    last_error: str | None = None
    delivered: int = 0
    behind_since: float | None = None
    limit: RateLimit = field(default_factory=RateLimit)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    def notify(self, seq: int) -> None:
        """The store committed kills up to `seq` (the pipeline's on_stored hook)."""
        self.head = max(self.head, seq)
        self._wake.set()

    def health(self) -> dict[str, Any]:
        return {
            "name": self.hook.name,
            "format": self.hook.format,
            "channel": self.hook.channel,
            "state": self.state,
            "cursor": self.cursor,
            "behind": max(0, self.head - self.cursor),
            "delivered": self.delivered,
            "last_error": self.last_error,
        }

    def lag_seconds(self) -> float:
        return 0.0 if self.behind_since is None else time.monotonic() - self.behind_since

    async def run(self) -> None:
        self.cursor = await cursor.load(self.store, self.hook.name)
        self.head = max(self.head, await self.store.last_seq())
        log.info("webhook %s: delivering %s kills after seq %d", self.hook.name, self.hook.channel, self.cursor)
        while self.state != "disabled":
            self._wake.clear()  # before reading: a commit after this point wakes the wait below
            rows = await self.store.after(self.cursor, PAGE)
            if not rows:
                self.state, self.behind_since = "idle", None
                if self.cursor > self.head:
                    self.head = self.cursor
                with suppress(TimeoutError):
                    async with asyncio.timeout(POLL):
                        await self._wake.wait()
                continue
            self.head = max(self.head, rows[-1].seq)
            if self.behind_since is None:
                self.behind_since = time.monotonic()
            self.state = "delivering" if self.state != "backing off" else self.state
            await self._deliver_page(rows)

    async def _deliver_page(self, rows: list[StoredKill]) -> None:
        now = time.time()
        items: list[Item] = []
        for n, row in enumerate(rows):
            if (item := select(self.hook, row, self.public_url, now)) is not None:
                items.append(item)
            if n % 16 == 15:
                await asyncio.sleep(0)  # decoding and matching are CPU work: let sockets breathe
        single = 0  # kills to send one per message (after a packed message was refused)
        while items and self.state != "disabled":
            seqs, payload, headers = build_request(self.hook, items[: 1 if single else discord.MAX_EMBEDS])
            outcome = await self._post(payload, headers, len(seqs))
            if outcome == "disabled":
                return
            if outcome == "rejected" and len(seqs) > 1:
                single = len(seqs)  # find the one the receiver refuses; post the others
                continue
            if outcome == "rejected":
                log.error(
                    "webhook %s: kill seq %d refused (%s); skipped so the kills after it still go",
                    self.hook.name,
                    seqs[0],
                    self.last_error,
                )
            else:
                self.delivered += len(seqs)
                self.metrics.kills.labels(self.hook.name).inc(len(seqs))
            single = max(0, single - len(seqs))
            del items[: len(seqs)]
            await self._advance(seqs[-1])
        if self.state != "disabled":
            await self._advance(rows[-1].seq)  # kills the channel does not select: passed over

    async def _advance(self, seq: int) -> None:
        if seq > self.cursor:
            await cursor.save(self.store, self.hook.name, seq)
            self.cursor = seq

    async def _post(self, payload: bytes, headers: dict[str, str], kills: int) -> str:
        """Post until the receiver takes it ("ok"), refuses it for good ("rejected") or is gone ("disabled")."""
        name = self.hook.name
        attempt = 0
        while True:
            answer = await post_once(self.session, self.hook, payload, headers, self.limit)
            if 200 <= answer.status < 300:
                self.metrics.posts.labels(name).inc()
                if self.state == "backing off":
                    log.info("webhook %s: delivering again after %d failed attempts", name, attempt)
                self.state, self.last_error = "delivering", None
                return "ok"
            self.last_error = answer.error
            if answer.status == 429:
                self.metrics.failures.labels(name, "rate_limited").inc()
                self.metrics.retries.labels(name, "rate_limited").inc()
                log.debug("webhook %s: rate limited; waiting %.2f s", name, self.limit.delay())
                continue  # post_once waits out the block first
            if answer.status in DISABLING:
                self.metrics.failures.labels(name, "disabled").inc()
                self.state = "disabled"
                log.error(
                    "webhook %s disabled: %s (deleted, or a wrong token?); fix the file and restart, it resumes"
                    " after seq %d",
                    name,
                    answer.error,
                    self.cursor,
                )
                return "disabled"
            if answer.status == 0 or answer.status >= 500 or answer.status == 408:
                kind = "network" if answer.status == 0 else "http_5xx"
                self.metrics.failures.labels(name, kind).inc()
                self.metrics.retries.labels(name, kind).inc()
                delay = min(self.hook.backoff_max, self.hook.backoff_min * 2 ** min(attempt, 20))
                delay *= random.uniform(0.5, 1.0)  # jitter: many webhooks on one host do not retry in step
                if self.state != "backing off":
                    log.warning("webhook %s: %s; retrying with backoff", name, answer.error)
                self.state = "backing off"
                attempt += 1
                await asyncio.sleep(delay)
                continue
            self.metrics.failures.labels(name, "rejected").inc()
            if kills > 1:
                log.warning(
                    "webhook %s: %d kills in one message refused (%s); one by one now", name, kills, answer.error
                )
            return "rejected"
