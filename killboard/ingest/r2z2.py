"""Follow zKillboard's R2Z2 live feed: one kill per sequence number, cursor saved with the kill.

`GET {base}/sequence.json` -> `{"sequence": N}` only to start; then `GET {base}/{N}.json` ->
`{killmail_id, hash, esi, zkb, uploaded_at, sequence_id}`. A 404 means N is not published yet
(wait ~6 s, ask again) or, when the feed has moved past N, that N has expired. The cursor is
committed in the same transaction as the kill's inbox row, so a restart (even after kill -9)
continues with the next sequence: no kill lost, none taken twice.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import ujson

from ..kill.validate import Invalid, parse_submission
from ..storage.store import Store
from .bounded import read_bounded
from .pipeline import Pipeline, QueueFull, StorageUnavailable
from .retry_after import retry_after

log = logging.getLogger(__name__)

# A page this big (a fleet fight) is parsed in a thread.
BIG_PAGE = 256 * 1024
CURSOR_KEY = "r2z2.sequence"  # the last sequence whose kill is in the inbox (or was skipped)
# sequence.json may run a little ahead of what is fetchable: a 404 with the feed only slightly
# past us is asked again this many times before we call it missing; far past us, it has expired.
MISSING_AFTER = 3
EXPIRED_MARGIN = 100
OVERSIZED = 413  # _get's status for an answer over max_bytes (no kill is that big)


class Backoff(Exception):
    """Upstream refused or failed (429/403/5xx/network): wait longer each time, and at least
    `retry_after` seconds when upstream said so."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


def backoff_delay(attempt: int, low: float, high: float) -> float:
    """`low` doubling with each attempt (the first waits `low`), never more than `high`.

    The exponent stops at 10 (1,024 x low, past any sane `high`): 2**1024 does not fit a float,
    and the follower would have died of an OverflowError after ~1,000 failures in a row.
    """
    return min(high, low * 2 ** min(attempt - 1, 10))


@dataclass(slots=True)
class FollowerState:
    sequence: int | None = None  # the next sequence to ask for
    kills: int = 0  # kills taken since start
    duplicates: int = 0  # kills the feed brought that were already stored or waiting
    last_kill_at: float | None = None  # uploaded_at of the last kill taken (unix seconds)
    last_error: str | None = None
    skipped: int = 0  # sequences skipped because the saved cursor had expired upstream
    running: bool = False

    def as_json(self) -> dict[str, Any]:
        lag = round(time.time() - self.last_kill_at, 1) if self.last_kill_at else None
        return {
            "running": self.running,
            "sequence": self.sequence,
            "kills": self.kills,
            "duplicates": self.duplicates,
            "lag_seconds": lag,
            "last_error": self.last_error,
            "skipped_sequences": self.skipped,
        }


class Follower:
    """The R2Z2 loop. One request at a time, at most `rate` per second."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        store: Store,
        pipeline: Pipeline,
        *,
        wait: float = 6.0,
        rate: float = 10.0,
        backoff_min: float = 1.0,
        backoff_max: float = 120.0,
        max_bytes: int = 32 * 1024 * 1024,
    ) -> None:
        self.session = session
        self.max_bytes = max_bytes  # the largest answer read (Config.max_body_bytes, as for a POST)
        self.base_url = base_url.rstrip("/")
        self.store = store
        self.pipeline = pipeline
        self.wait = wait
        self.min_interval = 1.0 / rate if rate > 0 else 0.0
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.state = FollowerState()
        self._last_request = 0.0
        self._failures = 0
        self._misses = 0  # 404s in a row for the current sequence while the feed is past it

    async def _get(self, path: str) -> tuple[int, Any]:
        """(status, JSON body or None) for 200, 404 and OVERSIZED; Backoff for anything else."""
        pause = self._last_request + self.min_interval - time.monotonic()
        if pause > 0:
            await asyncio.sleep(pause)
        self._last_request = time.monotonic()
        try:
            async with self.session.get(self.base_url + path) as resp:
                if resp.status == 404:
                    return 404, None
                if resp.status != 200:
                    raise Backoff(f"GET {path} answered {resp.status}", retry_after(resp.headers.get("Retry-After")))
                raw = await read_bounded(resp, self.max_bytes)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Backoff(f"GET {path}: {type(exc).__name__} {exc}".strip()) from None
        if raw is None:
            return OVERSIZED, None
        try:
            if len(raw) < BIG_PAGE:
                return 200, ujson.loads(raw)
            # A fleet fight (megabytes): parsed in a thread (~20 ms a MB).
            return 200, await asyncio.to_thread(ujson.loads, raw)
        except ValueError:
            raise Backoff(f"GET {path}: answer is not JSON") from None

    async def current_sequence(self) -> int:
        status, body = await self._get("/sequence.json")
        if status != 200 or not isinstance(body, dict) or not isinstance(body.get("sequence"), int):
            raise Backoff(f"GET /sequence.json answered {status} without a sequence")
        return int(body["sequence"])

    async def _start_sequence(self) -> int:
        saved = await self.store.get_state(CURSOR_KEY)
        if saved is not None:
            log.info("R2Z2: resuming after saved sequence %s", saved)
            return int(saved) + 1
        current = await self.current_sequence()
        log.info("R2Z2: no saved cursor; starting at the current sequence %d", current)
        return current

    async def run(self) -> None:
        """Forever: take sequence N, then N+1 ... Errors back off; only cancellation stops it."""
        self.state.running = True
        try:
            while True:
                try:
                    if self.state.sequence is None:
                        self.state.sequence = await self._start_sequence()
                    await self.step()
                    self._failures = 0
                except Backoff as exc:
                    await self._back_off(str(exc), exc.retry_after)
        finally:
            self.state.running = False

    async def _back_off(self, reason: str, asked: float | None = None) -> None:
        self._failures += 1
        delay = backoff_delay(self._failures, self.backoff_min, self.backoff_max)
        delay *= random.uniform(0.5, 1.0)  # jitter: many clients must not retry in step
        if asked is not None and asked > delay:
            # Upstream said how long (a 429 with Retry-After: 2 was retried after 0.84 s): never sooner.
            delay = asked * random.uniform(1.0, 1.1)
        self.state.last_error = reason
        log.warning("R2Z2: %s; retrying in %.1f s", reason, delay)
        await asyncio.sleep(delay)

    async def step(self) -> None:
        """Ask for the next sequence once; take its kill, or wait when it is not there yet."""
        seq = self.state.sequence
        assert seq is not None
        status, body = await self._get(f"/{seq}.json")
        if status == 200:
            await self._take(seq, body)
            self.state.sequence = seq + 1
            self._misses = 0
            return
        if status == OVERSIZED:
            # Not a kill (the biggest real fleet fight is a few MB): retrying would hold the feed
            # behind it for good. Skipped like an invalid one, the cursor past it.
            log.warning("R2Z2: sequence %d is over %d bytes, skipped", seq, self.max_bytes)
            self.state.skipped += 1
            await self.store.set_state({CURSOR_KEY: str(seq)})
            self.state.sequence = seq + 1
            return
        # 404: not published yet, or expired when the feed is already past it.
        current = await self.current_sequence()
        self._misses = self._misses + 1 if current > seq else 0
        if self._misses >= MISSING_AFTER or current - seq > EXPIRED_MARGIN:
            self._misses = 0
            # The current sequence was read after the 404: the object may have been published in
            # between (a burst moves the feed far past it at once). Look once more before skipping.
            status, body = await self._get(f"/{seq}.json")
            if status == 200:
                await self._take(seq, body)
                self.state.sequence = seq + 1
                return
            next_status, next_body = await self._get(f"/{seq + 1}.json")
            if next_status == 200:
                # Just this one is missing upstream: skip it, keep the rest.
                log.warning("R2Z2: sequence %d is missing upstream; skipped", seq)
                self.state.skipped += 1
                await self._take(seq + 1, next_body)
                self.state.sequence = seq + 2
                return
            gap = current - seq
            self.state.skipped += gap
            log.warning(
                "R2Z2: sequence %d has expired upstream; restarting at the current sequence %d"
                " (%d sequences skipped: `python app.py import` can fill the gap)",
                seq,
                current,
                gap,
            )
            await self.store.set_state({CURSOR_KEY: str(current - 1)})
            self.state.sequence = current
            return
        await asyncio.sleep(self.wait)

    async def _take(self, seq: int, body: Any) -> None:
        cursor = {CURSOR_KEY: str(seq)}
        try:
            sub = parse_submission(body)
        except Invalid as exc:
            log.warning("R2Z2: sequence %d is not a valid kill, skipped: %s", seq, "; ".join(exc.errors[:3]))
            await self.store.set_state(cursor)
            return
        refusals = 0
        while True:
            try:
                admitted = await self.pipeline.submit([sub], source="r2z2", state=cursor)
                break
            except QueueFull:
                # The worker is behind: hold this kill (and the cursor) until there is room.
                await asyncio.sleep(1.0)
            except StorageUnavailable as exc:
                # Disk full or I/O error: nothing was written, cursor included. Hold this kill and
                # ask again (backing off) rather than let the exception end the follower for good.
                refusals += 1
                self.state.last_error = f"storage unavailable: {exc}"
                if refusals == 1:
                    log.warning("R2Z2: cannot store sequence %d (%s); holding it until storage works", seq, exc)
                await asyncio.sleep(backoff_delay(refusals, self.backoff_min, self.backoff_max))
        self.state.kills += len(admitted.accepted)
        self.state.duplicates += len(admitted.duplicates)
        self.state.last_error = None
        uploaded = body.get("uploaded_at") if isinstance(body, dict) else None
        self.state.last_kill_at = float(uploaded) if isinstance(uploaded, int | float) else time.time()
