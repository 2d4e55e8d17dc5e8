"""Fan-out: N subscribers on the full feed while kills are POSTed at a steady rate."""

from __future__ import annotations

import asyncio
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from .data import stream, take
from .procstat import cpu_seconds
from .server import TOKEN, Server
from .wsclient import Pool

AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


@dataclass
class FanoutRun:
    subscribers: int
    kills: int
    rate: float
    frame_bytes: int
    deliveries: int
    expected: int
    seconds: float  # first POST to last arrival
    server_cpu: float
    latencies: list[float]
    connect_seconds: float

    @property
    def deliveries_per_s(self) -> float:
        return self.deliveries / self.seconds if self.seconds else 0.0

    @property
    def cpu_per_1000(self) -> float:
        return self.server_cpu / self.deliveries * 1000 if self.deliveries else float("nan")


async def post_one(session: aiohttp.ClientSession, url: str, km: dict[str, Any]) -> None:
    async with session.post(url + "/api/killmails", data=io.BytesIO(json.dumps(km).encode()), headers=AUTH) as resp:
        if resp.status != 202:
            raise RuntimeError(f"POST answered {resp.status}: {await resp.text()}")


async def post_steadily(
    session: aiohttp.ClientSession, url: str, kills: list[dict[str, Any]], rate: float
) -> tuple[dict[int, float], float]:
    """POST kills at a steady rate; returns (kill id -> when its POST left, the start time)."""
    posted: dict[int, float] = {}
    start = time.monotonic()
    for i, km in enumerate(kills):
        # A steady rate: each POST leaves at its slot, however long the last one took.
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        posted[km["killmail_id"]] = time.monotonic()
        await post_one(session, url, km)
    return posted, start


async def wait_received(pool: Pool, expected: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    got = await pool.received()
    while got < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        got = await pool.received()
    return got


async def run_fanout(
    workdir: Path,
    killmails: list[dict[str, Any]],
    subscribers: int,
    rate: float,
    seconds: float,
    processes: int,
    frame_bytes: int,
    big: dict[str, Any] | None = None,
) -> FanoutRun:
    """One run on a fresh server and database. `big`: post copies of this kill instead."""
    server = Server(workdir / f"fanout-{subscribers}-{time.monotonic_ns()}.sqlite3")
    pool = Pool(processes)
    try:
        await server.start()
        connected = await pool.connect("127.0.0.1", server.port, subscribers)
        source = stream([big] if big is not None else killmails)
        count = max(1, round(rate * seconds))
        async with aiohttp.ClientSession() as session:
            # Warm-up: one kill to everyone (first-use costs: caches, buffers, page faults).
            await post_one(session, server.url, next(source))
            await wait_received(pool, subscribers, 60)
            await pool.reset()
            kills = take(source, count)
            cpu0 = cpu_seconds(server.pid)
            posted, start = await post_steadily(session, server.url, kills, rate)
            expected = subscribers * count
            received = await wait_received(pool, expected, 60 + expected / 20_000)
            cpu = cpu_seconds(server.pid) - cpu0
        latencies = sorted(await pool.latencies(posted))
        last = await pool.last_arrival()
        return FanoutRun(
            subscribers=subscribers,
            kills=count,
            rate=rate,
            frame_bytes=frame_bytes,
            deliveries=received,
            expected=expected,
            seconds=max(last - start, 1e-9),
            server_cpu=cpu,
            latencies=list(latencies),
            connect_seconds=connected["seconds"],
        )
    finally:
        try:
            await pool.shutdown()
        finally:
            server.stop()
