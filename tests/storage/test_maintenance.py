"""Retention, vacuum and the WAL bound, on real databases, with the real upkeep pass and app."""

from __future__ import annotations

import asyncio
import copy
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from conftest import AUTH, Client, settle
from killgen import make_kills, save_all

from killboard.storage.maintenance import maintain, run_pass
from killboard.storage.store import Store

NOW = int(time.time())
OLD = NOW - 100 * 86_400


def file_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def wal(db: Path) -> Path:
    return Path(f"{db}-wal")


def recent(killmails: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """Real kills given new ids and a kill time of an hour ago."""
    out = []
    for n, km in enumerate(killmails[:count]):
        km = copy.deepcopy(km)
        km["killmail_id"] = 900_000_000 + n
        km["killmail_time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW - 3600))
        out.append(km)
    return out


async def test_retention_prunes_in_the_background_and_reads_say_so(
    make_client: Any, killmails: list[dict[str, Any]]
) -> None:
    client: Client = await make_client(retention_days=30, maintenance_interval=0.1)
    fresh = recent(killmails, 3)
    resp = await client.post("/api/killmails", data=json.dumps(killmails + fresh), headers=AUTH)
    assert resp.status == 202
    await settle(client)
    # The bundled kills are years old: the background pass removes them, keeps the recent three.
    for _ in range(100):
        health = await (await client.get("/health")).json()
        if health["kills"] == 3:
            break
        await asyncio.sleep(0.1)
    assert health["kills"] == 3

    old_id = killmails[0]["killmail_id"]
    resp = await client.get(f"/api/killmails/{old_id}")
    assert resp.status == 410
    body = await resp.json()
    assert body["pruned"] is True and "30 days" in body["error"]
    assert (await client.get(f"/api/killmails/{fresh[0]['killmail_id']}")).status == 200
    assert (await client.get("/api/killmails/1000000000")).status == 404  # above the pruned range

    page = await (await client.get("/api/killmails?after=0&limit=500")).json()
    assert [k["killmail_id"] for k in page["killmails"]] == [k["killmail_id"] for k in fresh]
    assert page["pruned"]["through_seq"] >= len(killmails)
    assert "pruned" in page["pruned"]["message"]
    last = page["next_after"]
    resumed = await (await client.get(f"/api/killmails?after={last}")).json()
    assert "pruned" not in resumed  # a client that is up to date is not warned


async def test_pass_gives_the_space_back(tmp_path: Path, static: Any, killmails: list[dict[str, Any]]) -> None:
    db = tmp_path / "kb.sqlite3"
    store = await Store.open(db)
    try:
        await save_all(store, make_kills(static, killmails, 2000, 300_000_000, OLD))
        await save_all(store, make_kills(static, killmails, 100, 400_000_000, NOW))
        await store.checkpoint()
        before = file_size(db)
        done = await run_pass(store, retention_days=30, batch=300)
        assert done.pruned == 2000
        assert done.pages_freed > 0
        assert await store.free_pages() == 0
        assert await store.count() == 100
    finally:
        await store.close()
    assert file_size(db) < before / 5  # 2,000 of 2,100 kills gone, and so is their space


async def test_pruning_does_not_hold_up_ingest(tmp_path: Path, static: Any, killmails: list[dict[str, Any]]) -> None:
    store = await Store.open(tmp_path / "kb.sqlite3")
    try:
        await save_all(store, make_kills(static, killmails, 3000, 300_000_000, OLD))
        new = make_kills(static, killmails, 50, 400_000_000, NOW)
        pruning = asyncio.create_task(run_pass(store, retention_days=30, batch=50, pause=0.01))
        await asyncio.sleep(0.02)
        stored_while_pruning = 0
        for i in range(0, 50, 10):
            await store.save_kills(new[i : i + 10])
            if not pruning.done():
                stored_while_pruning += 10
        done = await pruning
        # Every batch of new kills got in between prune steps, not after the whole prune.
        assert stored_while_pruning == 50
        assert done.pruned == 3000
        assert await store.count() == 50
    finally:
        await store.close()


async def test_wal_stays_bounded_under_ingest_and_a_long_read(
    tmp_path: Path, static: Any, killmails: list[dict[str, Any]]
) -> None:
    db = tmp_path / "kb.sqlite3"
    store = await Store.open(db)
    upkeep = asyncio.create_task(maintain(store, retention_days=0, interval=0.1, batch=500, vacuum_pages=1024))
    kills = make_kills(static, killmails, 6000, 300_000_000, NOW)
    peak_during_read = 0
    try:
        await save_all(store, kills[:1500])
        # A long reader (another process, say a backup) pins a snapshot: the WAL cannot be reset
        # while it reads, so it grows by what is written meanwhile...
        reader = sqlite3.connect(db)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM kills").fetchone()
        for i in range(1500, 4500, 200):
            await store.save_kills(kills[i : i + 200])
            await asyncio.sleep(0.01)
            peak_during_read = max(peak_during_read, file_size(wal(db)))
        reader.execute("COMMIT")
        reader.close()
        # ... and once it is done, the next checkpoint cuts the file back while ingest goes on.
        for i in range(4500, 6000, 200):
            await store.save_kills(kills[i : i + 200])
            await asyncio.sleep(0.05)
        after_read = file_size(wal(db))
        await asyncio.sleep(0.3)  # idle: the next pass truncates the WAL to nothing
        idle = file_size(wal(db))
    finally:
        upkeep.cancel()
        await asyncio.gather(upkeep, return_exceptions=True)
        await store.close()
    assert peak_during_read > 0
    assert after_read < peak_during_read
    assert after_read < 4 * 1024 * 1024
    assert idle == 0
