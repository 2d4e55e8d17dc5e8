"""ESI client: player names, market prices, and killmail bodies given only by id and hash.

ESI counts every 4xx/5xx answer against a per-client error budget and bans clients that exhaust
it; every response says what is left (`X-ESI-Error-Limit-Remain`) and when the window resets
(`X-ESI-Error-Limit-Reset`, seconds). When little is left, all calls pause until the reset.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Iterable
from contextlib import suppress
from typing import Any

import aiohttp
import ujson

from ..kill.frames import encode
from ..kill.prices import PriceBook
from ..storage.store import Store
from .bounded import read_bounded
from .retry_after import retry_after

log = logging.getLogger(__name__)

NAMES_PER_CALL = 1000  # ESI's limit for POST /universe/names/
ERROR_LIMIT_FLOOR = 10  # stop calling when this few errors are left in the window
# After a failed or slow name lookup, batches go out without waiting for ESI for this long
# (the late filler still completes them); and never more than this many lookups in flight.
DOWN_PAUSE = 30.0
MAX_LOOKUPS = 16
PLAYER_FIELDS = (
    ("character_id", "character_name"),
    ("corporation_id", "corporation_name"),
    ("alliance_id", "alliance_name"),
)


class EsiError(Exception):
    """A failed call that may work later (network, 5xx, 420/429, a slow answer)."""


class KillmailGone(Exception):
    """ESI says this id+hash does not exist (404/422): retrying will not help."""


class EsiClient:
    """Calls to ESI over the app's shared session, within ESI's error budget."""

    def __init__(
        self, session: aiohttp.ClientSession, base_url: str, concurrency: int = 8, max_bytes: int = 32 * 1024 * 1024
    ) -> None:
        self.session = session
        self.max_bytes = max_bytes  # the largest answer read (Config.max_body_bytes, as for a POST)
        self.base_url = base_url.rstrip("/")
        self._paused_until = 0.0
        self._slots = asyncio.Semaphore(concurrency)
        self.errors_remain: int | None = None
        self.unknown_ids: set[int] = set()
        # Failed calls by kind (network, rate_limited, http_5xx, oversized), read by GET /metrics.
        self.errors: collections.Counter[str] = collections.Counter()

    async def _call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """(status, decoded JSON or None). Network failures and timeouts raise EsiError."""
        async with self._slots:
            wait = self._paused_until - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            data = ujson.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json"} if data is not None else None
            try:
                async with self.session.request(method, self.base_url + path, data=data, headers=headers) as resp:
                    self._note_error_limit(resp.headers)
                    raw = await read_bounded(resp, self.max_bytes)
                    status = resp.status
                    asked = retry_after(resp.headers.get("Retry-After"))  # seconds or an HTTP-date
                    if status >= 500:
                        self.errors["http_5xx"] += 1
                        if asked is not None:  # 503 in downtime or overload: it says when to come back
                            self._pause(asked, f"ESI answered {status}")
                    if status in (420, 429):
                        self.errors["rate_limited"] += 1
                        if asked is None:
                            asked = _float(resp.headers.get("X-ESI-Error-Limit-Reset"))
                        self._pause(asked if asked is not None else 60.0, f"ESI answered {status}")
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.errors["network"] += 1
                raise EsiError(f"{method} {path}: {type(exc).__name__} {exc}".strip()) from None
        if raw is None:
            self.errors["oversized"] += 1
            raise EsiError(f"{method} {path}: answer over {self.max_bytes} bytes")
        try:
            return status, ujson.loads(raw) if raw else None
        except ValueError:
            return status, None

    def _note_error_limit(self, headers: Any) -> None:
        remain = _float(headers.get("X-ESI-Error-Limit-Remain"))
        if remain is None:
            return
        self.errors_remain = int(remain)
        if remain <= ERROR_LIMIT_FLOOR:
            reset = _float(headers.get("X-ESI-Error-Limit-Reset")) or 60.0
            self._pause(reset, f"ESI error budget low ({int(remain)} left)")

    def _pause(self, seconds: float, why: str) -> None:
        until = time.monotonic() + seconds
        if until > self._paused_until:
            log.warning("%s: pausing ESI calls for %.0f s", why, seconds)
            self._paused_until = until

    # -- names -------------------------------------------------------------------------------

    async def names(self, ids: Iterable[int]) -> dict[int, tuple[str, str]]:
        """id -> (name, category) for every id ESI knows; unknown ids are remembered and skipped."""
        wanted = sorted(set(ids) - self.unknown_ids)
        out: dict[int, tuple[str, str]] = {}
        for i in range(0, len(wanted), NAMES_PER_CALL):
            await self._names_batch(wanted[i : i + NAMES_PER_CALL], out)
        return out

    async def _names_batch(self, ids: list[int], out: dict[int, tuple[str, str]]) -> None:
        status, body = await self._call("POST", "/universe/names/", ids)
        if status == 200 and isinstance(body, list):
            for entry in body:
                if isinstance(entry, dict) and isinstance(entry.get("id"), int) and isinstance(entry.get("name"), str):
                    out[entry["id"]] = (entry["name"], str(entry.get("category", "")))
            return
        if status == 404:
            # One unknown id fails the whole batch: split until the bad ones stand alone.
            if len(ids) == 1:
                log.info("ESI does not know id %d; its name stays empty", ids[0])
                self.unknown_ids.add(ids[0])
                return
            half = len(ids) // 2
            await self._names_batch(ids[:half], out)
            await self._names_batch(ids[half:], out)
            return
        raise EsiError(f"POST /universe/names/ answered {status}")

    # -- prices and killmails ------------------------------------------------------------------

    async def market_prices(self) -> dict[int, tuple[float | None, float | None]]:
        status, body = await self._call("GET", "/markets/prices/")
        if status != 200 or not isinstance(body, list):
            raise EsiError(f"GET /markets/prices/ answered {status}")
        out: dict[int, tuple[float | None, float | None]] = {}
        for row in body:
            if isinstance(row, dict) and isinstance(row.get("type_id"), int):
                out[row["type_id"]] = (_float(row.get("average_price")), _float(row.get("adjusted_price")))
        if not out:
            # Never replace a good table with nothing because of one odd answer.
            raise EsiError("GET /markets/prices/ answered with no prices")
        return out

    async def killmail(self, killmail_id: int, killmail_hash: str) -> dict[str, Any]:
        status, body = await self._call("GET", f"/killmails/{killmail_id}/{killmail_hash}/")
        if status == 200 and isinstance(body, dict):
            return body
        if status in (404, 422):
            raise KillmailGone(f"ESI has no killmail {killmail_id} with hash {killmail_hash} ({status})")
        raise EsiError(f"GET /killmails/{killmail_id}/ answered {status}")


def _float(value: object) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


class NameService:
    """Names for the pipeline within a bounded wait; kills stored without them are patched later."""

    def __init__(self, client: EsiClient, store: Store, wait: float) -> None:
        self.client = client
        self.store = store
        self.wait = wait
        self._lookups: set[asyncio.Task[dict[int, str]]] = set()
        self._down_until = 0.0

    async def lookup(self, ids: Iterable[int]) -> dict[int, str]:
        """Ask ESI (no time limit) and cache what it says."""
        found = await self.client.names(ids)
        await self.store.save_names(found)
        return {i: name for i, (name, _) in found.items()}

    async def resolve(self, ids: set[int]) -> dict[int, str]:
        """The pipeline's hook: what ESI says within `wait` seconds, else what is known (nothing).

        A lookup that takes longer goes on in the background and still fills the cache.
        """
        if time.monotonic() < self._down_until or len(self._lookups) >= MAX_LOOKUPS:
            return {}  # ESI failed a moment ago, or is badly behind: don't make every batch wait
        task = asyncio.create_task(self.lookup(ids))
        self._lookups.add(task)
        task.add_done_callback(self._finished)
        try:
            return await asyncio.wait_for(asyncio.shield(task), self.wait)
        except TimeoutError:
            log.warning("ESI names took over %.1f s; %d names filled in later", self.wait, len(ids))
        except EsiError as exc:
            log.warning("ESI names failed (%s); %d names filled in later", exc, len(ids))
        self._down_until = time.monotonic() + DOWN_PAUSE
        return {}

    def _finished(self, task: asyncio.Task[dict[int, str]]) -> None:
        self._lookups.discard(task)
        if not task.cancelled():
            task.exception()  # a lookup that fails after resolve stopped waiting: no "never retrieved" warning

    async def close(self) -> None:
        for task in list(self._lookups):
            task.cancel()
        for task in list(self._lookups):
            with suppress(asyncio.CancelledError, Exception):
                await task

    async def fill_pending(self) -> int:
        """Patch names into stored kills that went out without them; returns kills rewritten."""
        rows = await self.store.names_pending(200)
        if not rows:
            return 0
        bodies = {r.killmail_id: ujson.loads(r.body) for r in rows}
        missing: set[int] = set()
        for kill in bodies.values():
            missing.update(i for i, _ in _missing_names(kill))
        known = await self.store.names(missing)
        if missing - known.keys():
            known.update(await self.lookup(missing - known.keys()))  # EsiError: try again next round
        patched: dict[int, bytes] = {}
        for kill_id, kill in bodies.items():
            changed = False
            for party, (id_key, name_key) in _parties_missing(kill):
                name = known.get(party[id_key])
                if name:
                    party[name_key] = name
                    changed = True
            if changed:
                patched[kill_id] = encode(kill)
        # ESI answered for every id: what it does not know never gets a name, so stop asking.
        await self.store.rewrite_bodies(patched, done=list(bodies))
        if patched:
            log.info("filled in player names of %d stored kills", len(patched))
        return len(patched)

    async def run_filler(self, every: float) -> None:
        while True:
            try:
                while await self.fill_pending():
                    pass
            except EsiError as exc:
                log.warning("filling in names later failed: %s; next try in %.0f s", exc, every)
            await asyncio.sleep(every)


def _parties_missing(kill: dict[str, Any]) -> Iterable[tuple[dict[str, Any], tuple[str, str]]]:
    for party in (kill.get("victim") or {}, *(kill.get("attackers") or ())):
        for id_key, name_key in PLAYER_FIELDS:
            if party.get(id_key) and not party.get(name_key):
                yield party, (id_key, name_key)


def _missing_names(kill: dict[str, Any]) -> Iterable[tuple[int, str]]:
    for party, (id_key, name_key) in _parties_missing(kill):
        yield party[id_key], name_key


async def refresh_prices(client: EsiClient, store: Store, prices: PriceBook, every: float) -> None:
    """Daily ESI market prices into SQLite and the live PriceBook; the bundled snapshot stays the fallback."""
    stored, fetched_at = await store.load_prices()
    if stored:
        prices.market = {**prices.market, **stored}
    delay = 0.0 if fetched_at is None else max(0.0, fetched_at + every - time.time())
    while True:
        await asyncio.sleep(delay)
        try:
            fresh = await client.market_prices()
            await store.save_prices(fresh)
            loaded, _ = await store.load_prices()
            prices.market = {**prices.market, **loaded}
            log.info("market prices refreshed from ESI: %d types", len(loaded))
            delay = every
        except EsiError as exc:
            log.warning("market price refresh failed (%s); retrying in 10 minutes", exc)
            delay = min(every, 600.0)
