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
from killboard.kill.staticdata import StaticData
from killboard.kill.topics import kill_facts
from killboard.storage.store import Store


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["json", "discord"])
async def test_sigkill_while_posting_loses_nothing(fmt: str, tmp_path: Path, killmails: list[dict[str, Any]]) -> None:
    fake: FakeReceiver | FakeDiscord = (
        await FakeReceiver(secret="k", delay=0.01).start() if fmt == "json" else await FakeDiscord(delay=0.05).start()
    )
    hooks = tmp_path / "hooks.toml"
    hooks.write_text(
        f'[[webhook]]\nname = "bot"\nurl = "{fake.url}"\nchannel = "kills"\nformat = "{fmt}"\nmax_age = 0\n'
        + ('secret = "k"\n' if fmt == "json" else "")
        + "backoff_min = 0.05\nbackoff_max = 0.2\n"
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
            target = len(fake.seqs()) + rng.randint(5, 60)

            async def far_enough(target: int = target) -> bool:
                return len(fake.seqs()) >= target

            await until(far_enough, 60)
            server.kill()
            crashes += 1
            await server.start()

        async def all_there() -> bool:
            return len(set(fake.seqs())) >= 300

        await until(all_there, 120)
        await asyncio.sleep(0.5)  # nothing more may come
    finally:
        server.stop()
        await fake.close()
    seqs = fake.seqs()
    assert set(seqs) == set(range(1, 301))  # every stored kill, none lost
    repeats = Counter(seqs) - Counter(set(seqs))
    # At most the request in flight, once per crash: one kill (json) or one message of <= 10 (discord).
    assert sum(repeats.values()) <= crashes * (1 if fmt == "json" else 10)
    assert list(dict.fromkeys(seqs)) == list(range(1, 301))  # first arrivals in order; a repeat restates the
    # message in flight (json: the kill just posted; discord: up to 10 kills again, from the cursor on)
    if isinstance(fake, FakeReceiver):
        assert fake.bad_signatures == 0
    else:
        assert fake.too_early == 0 and not fake.rejected  # a restarted server knows no bucket: 429s obeyed


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
