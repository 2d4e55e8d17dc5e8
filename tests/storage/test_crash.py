"""An acknowledged killmail survives `kill -9` of the server and is processed after restart."""

from __future__ import annotations

import asyncio
import itertools
import random
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from fakes import FakeEsi, FakeR2Z2, player_names, r2z2_object
from serverproc import ServerProcess

from killboard.ingest.r2z2 import CURSOR_KEY

TOKEN = "crash-token"


async def test_acknowledged_kills_survive_sigkill(tmp_path: Path, killmails: list[dict[str, Any]]) -> None:
    server = ServerProcess(tmp_path / "kb.sqlite3", env={"KILLBOARD_INGEST_TOKEN": TOKEN})
    acknowledged: list[int] = []
    try:
        await server.start()
        async with (
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session,
            session.post(server.url + "/api/killmails", json=killmails) as resp,
        ):
            assert resp.status == 202
            acknowledged = (await resp.json())["accepted"]
        # Killed right after the acknowledgement: most kills are still waiting for the worker.
        server.kill()
        assert len(acknowledged) == len(killmails)

        await server.start()
        async with aiohttp.ClientSession() as session:
            stored: dict[str, Any] = {}
            for _ in range(200):
                async with session.get(server.url + "/health") as resp:
                    stored = await resp.json()
                if stored["kills"] == len(acknowledged) and stored["inbox"] == 0:
                    break
                await asyncio.sleep(0.05)
            assert stored["kills"] == len(acknowledged)
            async with session.get(server.url + "/api/killmails?after=0&limit=500") as resp:
                kills = (await resp.json())["killmails"]
        ids = [k["killmail_id"] for k in kills]
        assert sorted(ids) == sorted(acknowledged)  # every one, exactly once
    finally:
        server.stop()


def stored_ids(db: Path) -> list[int]:
    """Kill ids in the server's database, read beside the running server (WAL allows it)."""
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return [row[0] for row in conn.execute("SELECT killmail_id FROM kills")]


def inbox_size(db: Path) -> int:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return int(conn.execute("SELECT count(*) FROM inbox").fetchone()[0])


async def inbox_drained(db: Path) -> None:
    """Until the restarted worker has processed every acknowledged kill (10 s at most)."""
    for _ in range(400):
        if inbox_size(db) == 0:
            return
        await asyncio.sleep(0.025)


async def post_stream(
    url: str, killmails: list[dict[str, Any]], rng: random.Random, ids: Iterator[int], acked: set[int], sent: set[int]
) -> None:
    """Post batches of 1-40 kills under fresh ids until cancelled; record what was acknowledged."""
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:
        while True:
            batch = [
                {**km, "killmail_id": km["killmail_id"] + next(ids)} for km in rng.sample(killmails, rng.randint(1, 40))
            ]
            sent.update(km["killmail_id"] for km in batch)
            try:
                async with session.post(url + "/api/killmails", json=batch) as resp:
                    if resp.status == 202:
                        body = await resp.json()
                        acked.update(body["accepted"])
                        acked.update(body["duplicates"])  # already stored or waiting: acknowledged before
            except (aiohttp.ClientError, ConnectionError):
                return  # the server died under us: this batch was never acknowledged


@pytest.mark.slow
async def test_random_sigkills_never_lose_or_double_an_acknowledged_kill(
    tmp_path: Path, killmails: list[dict[str, Any]]
) -> None:
    rng = random.Random(6)
    db = tmp_path / "kb.sqlite3"
    server = ServerProcess(db, env={"KILLBOARD_INGEST_TOKEN": TOKEN})
    ids = (n * 10**10 for n in itertools.count(1))
    acked: set[int] = set()
    sent: set[int] = set()
    try:
        for _ in range(20):
            await server.start()
            # After each restart: everything acknowledged so far is stored once the inbox drains.
            await inbox_drained(db)
            stored = stored_ids(db)
            assert len(stored) == len(set(stored)), "a kill was stored twice"
            assert acked <= set(stored), f"lost {len(acked - set(stored))} acknowledged kills"
            assert set(stored) <= sent
            # Three clients stream kills in; SIGKILL lands at a random moment among their commits.
            posters = [asyncio.create_task(post_stream(server.url, killmails, rng, ids, acked, sent)) for _ in range(3)]
            await asyncio.sleep(rng.uniform(0.05, 0.6))
            server.kill()
            await asyncio.gather(*posters, return_exceptions=True)
        await server.start()
        await inbox_drained(db)
        stored = stored_ids(db)
        assert len(stored) == len(set(stored))
        assert acked <= set(stored) <= sent
        assert len(acked) > 500, "too few kills acknowledged for the test to mean anything"
    finally:
        server.stop()


def cursor(db: Path) -> int | None:
    if not db.exists():
        return None
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        row = conn.execute("SELECT value FROM state WHERE key = ?", (CURSOR_KEY,)).fetchone()
    return int(row[0]) if row else None


@pytest.mark.slow
async def test_random_sigkills_while_following_r2z2_resume_without_a_gap(
    tmp_path: Path, killmails: list[dict[str, Any]]
) -> None:
    """The live upstream cursor is committed with the kill: after each SIGKILL the server asks
    for exactly the next sequence, and every kill the feed published up to the cursor is
    stored exactly once."""
    rng = random.Random(66)
    fake, esi = FakeR2Z2(), FakeEsi(names=player_names(killmails))
    published: dict[int, int] = {}  # sequence -> kill id
    for seq in range(1, 1001):
        km = {
            **killmails[seq % len(killmails)],
            "killmail_id": killmails[seq % len(killmails)]["killmail_id"] + seq * 10**10,
        }
        fake.publish(seq, r2z2_object(km, seq))
        published[seq] = km["killmail_id"]
    fake.current = 1  # a fresh follower starts at sequence.json's value; everything after it is there
    db = tmp_path / "kb.sqlite3"
    env = {"KILLBOARD_UPSTREAM": "on", "KILLBOARD_R2Z2_URL": await fake.start(), "KILLBOARD_ESI_URL": await esi.start()}
    server = ServerProcess(db, env=env)
    try:
        for _ in range(20):
            saved = cursor(db)
            fake.requests.clear()
            await server.start()
            await asyncio.sleep(rng.uniform(0.1, 0.6))
            server.kill()
            if saved is not None:
                asked = [int(path[1:-5]) for path in fake.requests if path != "/sequence.json"]
                # Resumed exactly after the saved cursor: no gap, nothing taken again.
                assert not asked or asked[0] == saved + 1, (saved, asked[:5])
                assert "/sequence.json" not in fake.requests
        await server.start()
        await asyncio.sleep(0.5)
        last = cursor(db)
        assert last is not None and last > 20, "the follower hardly moved: the test proves nothing"
        await inbox_drained(db)
        stored = stored_ids(db)
        assert len(stored) == len(set(stored)), "a kill was stored twice"
        # Every sequence up to the cursor has its kill stored (taken ones may run a little past it).
        missing = [seq for seq in range(1, last + 1) if published[seq] not in set(stored)]
        assert not missing, f"sequences taken but not stored: {missing[:10]}"
        assert set(stored) <= set(published.values())
    finally:
        server.stop()
        await fake.close()
        await esi.close()
