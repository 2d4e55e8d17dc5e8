"""Large API reads at once (issue 10 item 2): streamed, bounded in memory, /health answers meanwhile."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
from conftest import AUTH, TOKEN, Client, settle
from serverproc import ServerProcess

from killboard.web.keys import reads_key

STRIDE = 10**10  # renumbered copies of the real kills stay clear of the real ids


def renumbered(killmails: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    return [
        {
            **killmails[n % len(killmails)],
            "killmail_id": killmails[n % len(killmails)]["killmail_id"] + (n + 1) * STRIDE,
        }
        for n in range(count)
    ]


def peak_rss(pid: int) -> int:
    """VmHWM: the most resident memory the process has had, so a short peak is not missed."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


async def test_health_answers_while_48_large_reads_run(make_client: Any, killmails: list[dict[str, Any]]) -> None:
    client: Client = await make_client()
    for start in range(0, 500, 100):
        resp = await client.post(
            "/api/killmails", data=json.dumps(renumbered(killmails, 500)[start : start + 100]), headers=AUTH
        )
        assert resp.status == 202
    await settle(client)

    async def big_read() -> int:
        resp = await client.get("/api/killmails?limit=500")
        if resp.status == 200:
            assert len((await resp.json())["killmails"]) == 500
        return resp.status

    reads = [asyncio.create_task(big_read()) for _ in range(48)]
    limits = client.server.app[reads_key]
    await asyncio.sleep(0.05)
    answered_during = 0
    while not all(r.done() for r in reads):
        resp = await client.get("/health")
        assert resp.status == 200
        health = await resp.json()
        assert health["kills"] == 500
        if not all(r.done() for r in reads):
            answered_during += 1
    statuses = [r.result() for r in reads]
    # /health was answered again and again while the reads were still running.
    assert answered_during >= 3, answered_during
    # Reads beyond the stream slots wait for one; those that wait too long get a JSON 503.
    assert set(statuses) <= {200, 503}
    assert statuses.count(200) >= limits.streams


async def test_a_read_beyond_the_wait_is_503_json(make_client: Any, killmails: list[dict[str, Any]]) -> None:
    client: Client = await make_client(max_large_reads=1)
    resp = await client.post("/api/killmails", data=json.dumps(killmails[:5]), headers=AUTH)
    await settle(client)
    limits = client.server.app[reads_key]
    limits.wait = 0.1
    async with limits.stream():  # the only slot, held as a stalled reader would
        resp = await client.get("/api/killmails")
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "2"
        assert "large reads are already running" in (await resp.json())["error"]
    resp = await client.get("/api/killmails")
    assert resp.status == 200 and len((await resp.json())["killmails"]) == 5


async def test_16_reads_of_500_stay_within_a_memory_bound(tmp_path: Path, killmails: list[dict[str, Any]]) -> None:
    """Built whole, 16 concurrent limit=500 reads raised the server's RSS by ~500 MB (issue 10).
    Streamed 25 kills at a time, 8 at once, the peak may grow by at most 150 MB."""
    server = ServerProcess(tmp_path / "kb.sqlite3", env={"KILLBOARD_INGEST_TOKEN": TOKEN})
    await server.start()
    try:
        assert server.proc is not None
        async with aiohttp.ClientSession() as session:
            kills = renumbered(killmails, 500)
            for start in range(0, 500, 100):
                async with session.post(
                    server.url + "/api/killmails", json=kills[start : start + 100], headers=AUTH
                ) as r:
                    assert r.status == 202
            for _ in range(200):
                async with session.get(server.url + "/health") as r:
                    if (await r.json())["kills"] == 500:
                        break
                await asyncio.sleep(0.05)
            async with session.get(server.url + "/api/killmails?limit=500") as r:  # warm caches once
                size = len(await r.read())
            assert size > 5 * 2**20  # the 500 kills are megabytes of JSON: a read worth bounding
            before = peak_rss(server.proc.pid)

            async def big_read() -> int:
                # Half of them wait for a slot; on a busy machine a wait may pass 5 s and be
                # told 503: a well-behaved client retries after Retry-After.
                for _ in range(30):
                    async with session.get(server.url + "/api/killmails?limit=500") as r:
                        if r.status == 200:
                            return len(await r.read())
                        assert r.status == 503, r.status
                        await asyncio.sleep(float(r.headers["Retry-After"]))
                raise AssertionError("no slot in 30 tries")

            sizes = await asyncio.gather(*(big_read() for _ in range(16)))
            grown = peak_rss(server.proc.pid) - before
        assert sizes == [size] * 16
        assert grown < 150 * 2**20, f"peak RSS grew {grown / 2**20:.0f} MB for 16 reads of {size / 2**20:.1f} MiB"
        print(f"16 reads of {size / 2**20:.1f} MiB: peak RSS +{grown / 2**20:.0f} MB")
    finally:
        server.stop()
