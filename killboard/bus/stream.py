"""The stream's entry format, the connection to Redis, and the stream as a replay source (XRANGE).

One entry per stored kill, its ID `<seq>-0` (explicit and strictly increasing, so the stream ID
is the resume offset), with the fields:

- `b`: the kill's JSON body (the bytes the hub publishes), zlib-compressed: a large entry gets a
  listpack node of its own, so a day of 28 KB kills would hold ~1 GB of Redis memory raw;
- `f`: its match keys (topics.KillFacts) as JSON, so an edge never decodes a kill to match it;
- `p`: the seq of the stored kill before it (no stored kill lies between `p` and this one): an
  edge whose last seq is below `p` knows it missed kills (trimmed away or lost with Redis);
- `l`: `1` if the kill is pushed live, `0` if it is only replayed (bulk imports, old kills);
- `t`: the writer's clock when it appended the entry (lag figures).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, cast

import ujson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..kill.topics import KillFacts
from ..live.replay import LogUnavailable

# What XRANGE/XREVRANGE answer without decode_responses (redis-py types them loosely).
Entries = list[tuple[bytes, dict[bytes, bytes]]]

log = logging.getLogger(__name__)

# A read loop's XREAD BLOCK time. redis-py raises TimeoutError when a command outlasts
# `socket_timeout` (redis-py issues 2807, 3138), so the edge's socket timeout is set above it.
BLOCK_MS = 5000
SOCKET_TIMEOUT = 10.0
CONNECT_TIMEOUT = 3.0


@dataclass(frozen=True, slots=True)
class Entry:
    """One stored kill as the stream carries it."""

    seq: int
    prev: int
    body: bytes  # uncompressed JSON
    facts: KillFacts
    live: bool


class Position(Protocol):
    """An edge's follower as a replay sees it: the last seq it published, and a wait for more."""

    last: int

    async def reach(self, seq: int) -> None: ...


def connect(url: str, socket_timeout: float = SOCKET_TIMEOUT) -> Redis:
    """A client for KILLBOARD_REDIS_URL (redis://, rediss:// for TLS, unix://; user and password
    in the URL). Bytes in and out: bodies are binary."""
    return Redis.from_url(
        url, socket_timeout=socket_timeout, socket_connect_timeout=CONNECT_TIMEOUT, health_check_interval=30
    )


def encode_facts(facts: KillFacts) -> bytes:
    return ujson.dumps(sorted(facts.keys, key=repr)).encode()


def decode_facts(raw: bytes) -> KillFacts:
    return KillFacts(frozenset(tuple(key) for key in ujson.loads(raw)))


def fields(entry: Entry, compressed: bytes, appended_at: float) -> list[bytes]:
    """The entry's field/value pairs, flat, as XADD (and the writer's script) take them;
    `compressed` is its body through zlib."""
    return [
        b"b",
        compressed,
        b"f",
        encode_facts(entry.facts),
        b"p",
        b"%d" % entry.prev,
        b"l",
        b"1" if entry.live else b"0",
        b"t",
        b"%.3f" % appended_at,
    ]


def entry_seq(entry_id: bytes | str) -> int:
    raw = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(raw.partition("-")[0])


@dataclass(frozen=True, slots=True)
class Raw:
    """An entry as read, body still compressed: an edge inflates it only if a socket wants it."""

    seq: int
    prev: int
    compressed: bytes
    facts: KillFacts
    live: bool
    appended_at: float

    def body(self) -> bytes:
        return zlib.decompress(self.compressed)


def decode(entry_id: bytes, values: Mapping[bytes, bytes]) -> Raw:
    return Raw(
        seq=entry_seq(entry_id),
        prev=int(values[b"p"]),
        compressed=values[b"b"],
        facts=decode_facts(values[b"f"]),
        live=values.get(b"l", b"1") == b"1",
        appended_at=float(values.get(b"t", b"0")),
    )


async def top(redis: Redis, key: str) -> int:
    """The seq of the stream's last entry; 0 when it is empty or missing."""
    newest = cast(Entries, await redis.xrevrange(key, count=1))
    return entry_seq(newest[0][0]) if newest else 0


async def floor(redis: Redis, key: str) -> int | None:
    """The stream has every stored kill after this seq (its first entry's `prev`); None if empty."""
    oldest = cast(Entries, await redis.xrange(key, count=1))
    return int(oldest[0][1][b"p"]) if oldest else None


class StreamLog:
    """The stream as replay.KillLog: what an edge replays for `since`, from XRANGE."""

    def __init__(self, redis: Redis, key: str, position: Position) -> None:
        self._redis = redis
        self._key = key
        # The edge's follower: the last seq it published, and a wait for it to get further.
        self._position = position

    async def bounds(self, since: int) -> tuple[int, int]:
        """(floor, end). The replay reads up to the follower's position, so that every later
        kill reaches the socket live; first the follower is given a moment to reach `since`
        (a client moving from another edge that was ahead), so it gets nothing twice."""
        try:
            stream_top = await top(self._redis, self._key)
            await self._position.reach(min(since, stream_top))
            first = await floor(self._redis, self._key)
        except (RedisError, OSError) as exc:
            raise LogUnavailable(str(exc) or type(exc).__name__) from exc
        end = self._position.last
        return (end if first is None else first), end

    async def seqs_after(self, seq: int, upto: int, limit: int) -> list[int]:
        return [entry.seq for entry in await self._range(f"({seq}", f"{upto}", limit)]

    async def by_seqs(self, seqs: Sequence[int]) -> Sequence[tuple[int, bytes, KillFacts | None]]:
        if not seqs:
            return []
        wanted = set(seqs)
        entries = await self._range(f"{min(seqs)}", f"{max(seqs)}", None)
        return [(e.seq, e.body(), e.facts) for e in entries if e.seq in wanted]

    async def _range(self, low: str, high: str, count: int | None) -> list[Raw]:
        try:
            rows = cast(Entries, await self._redis.xrange(self._key, min=low, max=high, count=count))
        except (RedisError, OSError) as exc:
            raise LogUnavailable(str(exc) or type(exc).__name__) from exc
        return [decode(entry_id, values) for entry_id, values in rows]
