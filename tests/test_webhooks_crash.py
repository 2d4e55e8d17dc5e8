"""The real server as a subprocess: `kill -9` while posting loses no kill, and `webhooks test` posts one."""

from __future__ import annotations

import asyncio
import random
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import ujson
from conftest import TOKEN, until
from killgen import make_kills, save_all
from serverproc import ServerProcess
from webhookfakes import FakeDiscord, FakeReceiver

from killboard.config import PROJECT_ROOT
from killboard.staticdata import StaticData
from killboard.store import Store
from killboard.topics import kill_facts


@pytest.mark.slow
async def test_sigkill_while_posting_loses_nothing(tmp_path: Path, killmails: list[dict[str, Any]]) -> None:
    receiver = await FakeReceiver(secret="k", delay=0.01).start()
    hooks = tmp_path / "hooks.toml"
    hooks.write_text(
        f'[[webhook]]\nname = "bot"\nurl = "{receiver.url}"\nchannel = "kills"\nformat = "json"\n'
        'secret = "k"\nmax_age = 0\nbackoff_min = 0.05\nbackoff_max = 0.2\n'
    )
    server = ServerProcess(
        tmp_path / "kb.sqlite3", env={"KILLBOARD_INGEST_TOKEN": TOKEN, "KILLBOARD_WEBHOOKS": str(hooks)}
    )
    kills = [{**killmails[n % 82], "killmail_id": 800_000_000 + n} for n in range(300)]
    rng = random.Random(13)
    crashes = 0
    try:
        await server.start()
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:
            for i in range(0, len(kills), 50):  # under 1 MiB a request
                async with session.post(server.url + "/api/killmails", json=kills[i : i + 50]) as resp:
                    assert resp.status == 202
        for _ in range(3):  # kill it at three random moments of the catch-up
            target = len(receiver.frames) + rng.randint(5, 60)

            async def far_enough(target: int = target) -> bool:
                return len(receiver.frames) >= target

            await until(far_enough, 60)
            server.kill()
            crashes += 1
            await server.start()
        await until(lambda: _all(receiver, 300), 120)
        await asyncio.sleep(0.5)  # nothing more may come
    finally:
        server.stop()
        await receiver.close()
    seqs = receiver.seqs()
    assert set(seqs) == set(range(1, 301))  # every stored kill, none lost
    repeats = Counter(seqs) - Counter(set(seqs))
    assert sum(repeats.values()) <= crashes  # at most the one in flight, once per crash
    assert seqs == sorted(seqs)  # in order (a repeat comes right after itself)
    assert receiver.bad_signatures == 0


async def _all(receiver: FakeReceiver, n: int) -> bool:
    return len(set(receiver.seqs())) >= n


async def test_webhooks_test_posts_one_stored_kill(
    tmp_path: Path, static: StaticData, killmails: list[dict[str, Any]]
) -> None:
    db = tmp_path / "kb.sqlite3"
    store = await Store.open(db)
    try:
        await save_all(store, make_kills(static, killmails, 82, 1_000, 1_700_000_000))
    finally:
        await store.close()
    fake = await FakeDiscord().start()
    hooks = tmp_path / "hooks.toml"
    url = fake.url
    hooks.write_text(f'[[webhook]]\nname = "d"\nurl = "{url}"\nchannel = "frigates"\n')
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "app.py", "webhooks", "test", "d", "--file", str(hooks), "--db", str(db),
            cwd=PROJECT_ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        await fake.close()
    assert proc.returncode == 0, err.decode()
    assert len(fake.messages) == 1 and len(fake.messages[0]["embeds"]) == 1
    # The newest stored kill the channel selects (the victim flew a frigate).
    store = await Store.open(db)
    try:
        rows = await store.latest(1000)
    finally:
        await store.close()
    frigates = [r.killmail_id for r in rows if ("topic", "frigates") in kill_facts(ujson.loads(r.body)).keys]
    assert fake.kill_ids() == [frigates[0]] and len(frigates) < len(rows)
    assert b"posted kill seq" in out and url.encode() not in out + err
    assert b"webhook" not in err  # no error line
