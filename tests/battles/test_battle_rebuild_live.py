"""`python app.py battles rebuild` beside a running server: the server's live detector loads the
rebuilt battles, and the next live kill joins them (a real server and a real rebuild process)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
from asyncio.subprocess import PIPE, STDOUT
from contextlib import closing
from pathlib import Path
from typing import Any

import aiohttp
from battlefights import fight, merging_halves, post_all
from conftest import AUTH, TOKEN, Client, until
from serverproc import ServerProcess

from killboard.battles.service import REBUILT
from killboard.config import PROJECT_ROOT
from killboard.web.keys import battles_key, config_key, foreign_key


async def run(*args: str) -> None:
    """`python app.py ARGS` in a process of its own, without blocking this event loop."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "app.py", *args, cwd=PROJECT_ROOT, stdout=PIPE, stderr=STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, out.decode()[-2000:]


def open_battles(db: Path) -> list[tuple[int, int]]:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute("SELECT battle_id, kill_count FROM battles WHERE merged_into IS NULL").fetchall()


async def test_a_live_kill_joins_the_battle_a_rebuild_made(tmp_path: Path) -> None:
    """Kills stored before battles existed (a database of the previous release) are in none;
    the server's detector holds them loose. `battles rebuild` (another process) puts them in a
    battle; a live kill of that fight then joins that battle, on the API and its channel, instead
    of starting a battle of its own from the loose kills memory still held."""
    kills = fight("30002472")
    db = tmp_path / "kb.sqlite3"
    (tmp_path / "fight.json").write_text(json.dumps(kills))
    await run("import", str(tmp_path / "fight.json"), "--db", str(db), "--no-upstream")
    with closing(sqlite3.connect(db)) as conn:  # back to schema 6: kills, no battles
        conn.executescript(
            "DROP TABLE battles; DROP TABLE battle_kills; DROP TABLE entity_months; DROP TABLE entity_tops;"
            " PRAGMA user_version = 6;"
        )
    server = ServerProcess(db, env={"KILLBOARD_INGEST_TOKEN": TOKEN})
    try:
        await server.start()
        assert open_battles(db) == []
        await run("battles", "rebuild", "--db", str(db))
        [(battle_id, count)] = open_battles(db)
        assert count == len(kills)

        last = max(kills, key=lambda k: (k["killmail_time"], k["killmail_id"]))
        new = {**last, "killmail_id": last["killmail_id"] + 10**10}  # one more kill of the fight
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(server.url + "/ws")
            await ws.send_json({"action": "sub", "channel": f"battle:{battle_id}"})
            assert (await ws.receive_json(timeout=10))["action"] == "subscribed"
            async with session.post(server.url + "/api/killmails", json=new, headers=AUTH) as resp:
                assert resp.status in (200, 202), await resp.text()

            async def joined() -> bool:
                async with session.get(f"{server.url}/api/battles/{battle_id}") as resp:
                    data: dict[str, Any] = await resp.json()
                return data["kill_count"] == len(kills) + 1

            await until(joined, 10)
            async with session.get(f"{server.url}/api/battles/{battle_id}") as resp:
                battle = await resp.json()
            assert new["killmail_id"] in battle["killmail_ids"]
            while (frame := await ws.receive_json(timeout=10))["action"] != "kill":
                assert frame["action"] == "battle" and frame["data"]["battle_id"] == battle_id
            assert frame["data"]["killmail_id"] == new["killmail_id"]
            await ws.close()
        assert open_battles(db) == [(battle_id, len(kills) + 1)]  # no battle of its own
        with closing(sqlite3.connect(db)) as conn:
            assert conn.execute("SELECT value FROM state WHERE key = ?", (REBUILT,)).fetchone() == ("1",)
    finally:
        server.stop()


async def test_only_a_rebuild_reloads_the_detector(client: Client, tmp_path: Path) -> None:
    """An import by another process (kills joining battles as the server's would) is folded
    into the same detector, not reloaded; a rebuild reloads it as soon as it is noticed, before
    any new kill."""
    app = client.server.app
    await post_all(client, fight("30001155"))
    battles, foreign = app[battles_key], app[foreign_key]
    db = str(app[config_key].db_path)
    detector = battles.detector
    (tmp_path / "other.json").write_text(json.dumps(fight("30002472")))
    await run("import", str(tmp_path / "other.json"), "--db", db, "--no-upstream")

    async def noticed() -> bool:
        return foreign.noticed >= 1

    await until(noticed)

    async def folded() -> bool:
        return battles.caught == len(fight("30002472"))

    await until(folded)
    assert battles.reloads == 0 and battles.detector is detector
    await run("battles", "rebuild", "--db", db)

    async def reloaded() -> bool:
        return battles.reloads == 1

    await until(reloaded)
    assert battles.detector is not detector
    assert sorted(battles.detector.battles) == sorted(b for b, _ in open_battles(Path(db)))


async def test_a_rebuild_keeps_the_redirects_of_merged_battles_and_never_gives_their_ids_again(
    client: Client, tmp_path: Path
) -> None:
    """Two battles of one fight that merged leave an id that redirects (a link someone shared).
    `battles rebuild` keeps that redirect, and a battle after it never takes the id: the link
    never shows another fight."""
    app = client.server.app
    db = str(app[config_key].db_path)
    early, middle, late = merging_halves()
    await post_all(client, early)
    await post_all(client, late)
    await post_all(client, middle)
    [(kept, _)] = open_battles(Path(db))
    with closing(sqlite3.connect(db)) as conn:
        [(gone,)] = conn.execute("SELECT battle_id FROM battles WHERE merged_into = ?", (kept,)).fetchall()
    assert gone > kept
    await run("battles", "rebuild", "--db", db)

    async def reloaded() -> bool:
        return app[battles_key].reloads == 1

    await until(reloaded)
    resp = await client.get(f"/api/battles/{gone}", allow_redirects=False)
    assert resp.status == 308 and resp.headers["Location"] == f"/api/battles/{kept}"
    await post_all(client, fight("30001155"))  # another fight: a new battle
    new = {b for b, _ in open_battles(Path(db))} - {kept}
    assert len(new) == 1 and new.isdisjoint({kept, gone}), new
    resp = await client.get(f"/api/battles/{gone}", allow_redirects=False)
    assert resp.status == 308 and resp.headers["Location"] == f"/api/battles/{kept}"
