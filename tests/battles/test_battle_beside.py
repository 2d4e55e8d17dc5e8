"""Battles stay right beside other writers: kills an import (another process) stores join the
server's live detector, and a rebuild leaves no kill stored while it ran in no battle. Real
fights (tests/data/battles), real `app.py import` and `app.py battles rebuild` processes, real
SQLite files; the result is always compared with a rebuild of the same kills after the fact."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import sqlite3
import sys
from asyncio.subprocess import PIPE, STDOUT
from contextlib import closing
from pathlib import Path
from typing import Any

import aiohttp
from battlefights import fight, merging_halves, post_all, when
from conftest import AUTH, TOKEN, Client, until
from serverproc import ServerProcess

from killboard.config import PROJECT_ROOT
from killboard.web.keys import battles_key, config_key, foreign_key

_numbers = itertools.count()  # names of the files a test writes
Battles = dict[int, tuple[frozenset[int], int, int, int, str, float]]


async def run(*args: str) -> str:
    """`python app.py ARGS` in a process of its own, without blocking this event loop."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "app.py", *args, cwd=PROJECT_ROOT, stdout=PIPE, stderr=STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, out.decode()[-2000:]
    return out.decode()


async def import_kills(kills: list[dict[str, Any]], db: Path, tmp_path: Path) -> None:
    path = tmp_path / f"import-{next(_numbers)}.json"
    path.write_text(json.dumps(kills))
    assert f"imported {len(kills)}," in await run("import", str(path), "--db", str(db), "--no-upstream")


def battles_in(db: Path) -> Battles:
    """Each battle's kills (killmail ids) and row, by id: what the API and pages are made of."""
    with closing(sqlite3.connect(db)) as conn:
        members: dict[int, set[int]] = {}
        for battle_id, killmail_id in conn.execute(
            "SELECT b.battle_id, k.killmail_id FROM battle_kills b JOIN kills k USING (seq)"
        ):
            members.setdefault(battle_id, set()).add(killmail_id)
        rows = conn.execute(
            "SELECT battle_id, kill_count, start_time, end_time, system_ids, isk_destroyed FROM battles"
            " WHERE merged_into IS NULL"
        ).fetchall()
    return {
        b: (frozenset(members.get(b, ())), n, start, end, systems, round(isk, 2))
        for b, n, start, end, systems, isk in rows
    }


async def rebuilt_after(db: Path, tmp_path: Path) -> Battles:
    """The battles of a copy of `db` after `battles rebuild`: one process doing it all, in kill-time order."""
    copy = tmp_path / f"after-{next(_numbers)}.sqlite3"
    with closing(sqlite3.connect(db)) as conn, closing(sqlite3.connect(copy)) as out:
        conn.backup(out)
    await run("battles", "rebuild", "--db", str(copy))
    return battles_in(copy)


def loose(db: Path) -> list[int]:
    """The seqs of the stored kills in no battle."""
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT seq FROM kills k LEFT JOIN battle_kills b USING (seq) WHERE b.seq IS NULL")
        return [seq for (seq,) in rows]


def in_time_order(kills: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(kills, key=lambda k: (when(k), k["killmail_id"]))


async def test_an_import_beside_the_server_and_live_kills_make_the_battles_of_one_process(tmp_path: Path) -> None:
    """Half of two real fights imported by another process while the server runs, the other
    half posted live to the server (a quarter of one fight before the import, the rest after).
    The server learns of the imported kills: the live kills join the battles they made (no
    second battle for the fight the import made, no battle row counting only the server's
    kills), exactly as a rebuild of all the kills afterwards gives them."""
    a, b = in_time_order(fight("30002472")), in_time_order(fight("30001155"))
    imported = a[0::2] + b[0::2]
    early, late = a[1::2][:20], a[1::2][20:] + b[1::2]
    db = tmp_path / "kb.sqlite3"
    server = ServerProcess(db, env={"KILLBOARD_INGEST_TOKEN": TOKEN})
    try:
        await server.start()
        async with aiohttp.ClientSession() as session:

            async def post(kills: list[dict[str, Any]]) -> None:
                for i in range(0, len(kills), 10):
                    body = io.BytesIO(json.dumps(kills[i : i + 10]).encode())
                    async with session.post(server.url + "/api/killmails", data=body, headers=AUTH) as resp:
                        assert resp.status in (200, 202), await resp.text()

            async def stored(n: int) -> None:
                async def check() -> bool:
                    with closing(sqlite3.connect(db)) as conn:
                        return bool(conn.execute("SELECT count(*) FROM kills").fetchone()[0] == n)

                await until(check, 30)

            await post(early)
            await stored(len(early))
            await import_kills(imported, db, tmp_path)
            await post(late)
            await stored(len(a) + len(b))
            async with session.get(server.url + "/api/battles") as resp:
                listed = (await resp.json())["battles"]
        here = battles_in(db)
        assert sorted(len(kills) for kills, *_ in here.values()) == [len(b), len(a)]
        assert here == await rebuilt_after(db, tmp_path)
        assert sorted(s["kill_count"] for s in listed) == [len(b), len(a)]
    finally:
        server.stop()


async def test_an_import_and_live_kills_at_the_same_time(tmp_path: Path) -> None:
    """The largest real fight, every other kill imported by another process while the others are
    posted live at the same time: each process folds the other's commits into its detector before
    its own batch, so the fight is one battle, as a rebuild afterwards gives it."""
    kills = in_time_order(fight("30004049"))
    imported, live = kills[0::2], kills[1::2]
    db = tmp_path / "kb.sqlite3"
    server = ServerProcess(db, env={"KILLBOARD_INGEST_TOKEN": TOKEN})
    try:
        await server.start()
        async with aiohttp.ClientSession() as session:

            async def post() -> None:
                for i in range(0, len(live), 5):
                    body = io.BytesIO(json.dumps(live[i : i + 5]).encode())
                    async with session.post(server.url + "/api/killmails", data=body, headers=AUTH) as resp:
                        assert resp.status in (200, 202), await resp.text()
                    await asyncio.sleep(0.02)

            await asyncio.gather(import_kills(imported, db, tmp_path), post())

            async def stored() -> bool:
                with closing(sqlite3.connect(db)) as conn:
                    return bool(conn.execute("SELECT count(*) FROM kills").fetchone()[0] == len(kills))

            await until(stored, 30)
        server.terminate()
        here = battles_in(db)
        assert [len(k) for k, *_ in here.values()] == [len(kills)]
        assert here == await rebuilt_after(db, tmp_path)
    finally:
        server.stop()


async def test_a_batch_written_before_the_poll_joins_the_imported_battles(client: Client, tmp_path: Path) -> None:
    """The server's write sees the import's kills even when the poll has not noticed them yet
    (here: it never does): live kills join the battle the import made, including the server's
    own loose opening kills the import put in it, and memory holds none of those as loose."""
    app = client.app
    battles = app[battles_key]
    app[foreign_key].listeners.remove(battles.elsewhere)
    db = app[config_key].db_path
    kills = in_time_order(fight("30002472"))
    opening, imported, live = kills[:3], kills[3::2], kills[4::2]
    await post_all(client, opening)  # three kills: loose
    await import_kills(imported, db, tmp_path)
    assert battles.caught == 0
    await post_all(client, live)
    assert battles.caught == len(imported)
    here = battles_in(db)
    assert [len(k) for k, *_ in here.values()] == [len(kills)]
    assert here == await rebuilt_after(db, tmp_path)
    [battle] = battles.detector.battles.values()
    assert battle.kill_count == len(kills)
    with closing(sqlite3.connect(db)) as conn:
        in_battles = {s for (s,) in conn.execute("SELECT seq FROM battle_kills")}
    assert not in_battles & set(battles.detector.pooled(battle.systems, 0, 2**62))


async def test_the_poll_folds_an_import_in_and_sees_its_merges(client: Client, tmp_path: Path) -> None:
    """The poll of other processes' commits folds the import's kills into the detector before
    any live kill: here the import's kills merge the server's two battles of one fight, and the
    server's next kill joins the battle kept, never the id that now redirects."""
    app = client.app
    battles = app[battles_key]
    db = app[config_key].db_path
    early, middle, late = merging_halves()
    last = max(late, key=lambda k: (when(k), k["killmail_id"]))
    await post_all(client, early + [k for k in late if k is not last])
    assert len(battles.detector.battles) == 2
    await import_kills(middle, db, tmp_path)

    async def caught() -> bool:
        return battles.caught == len(middle)

    await until(caught)
    here = battles_in(db)
    assert sorted(battles.detector.battles) == sorted(here)  # the merged one went
    assert {b: x.kill_count for b, x in battles.detector.battles.items()} == {b: r[1] for b, r in here.items()}
    await post_all(client, [last])
    here = battles_in(db)
    assert [len(k) for k, *_ in here.values()] == [len(early) + len(middle) + len(late)]
    assert here == await rebuilt_after(db, tmp_path)


async def test_kills_stored_while_a_rebuild_runs_end_in_their_battle(tmp_path: Path) -> None:
    """Two real fights posted live, a kill at a time in two streams, while `battles rebuild` runs
    beside the server (again, until one of its runs had kills stored between its read and its
    write): afterwards every kill of the fights is in a battle, the one a rebuild after the fact
    gives it."""
    db = tmp_path / "kb.sqlite3"
    await import_kills(fight("30001155"), db, tmp_path)
    streams = [in_time_order(fight("30004049")), in_time_order(fight("30002472"))]
    server = ServerProcess(db, env={"KILLBOARD_INGEST_TOKEN": TOKEN})
    outputs: list[str] = []
    try:
        await server.start()
        async with aiohttp.ClientSession() as session:

            async def post(kills: list[dict[str, Any]]) -> None:
                for kill in kills:
                    async with session.post(server.url + "/api/killmails", json=kill, headers=AUTH) as resp:
                        assert resp.status in (200, 202), await resp.text()
                    await asyncio.sleep(0.005)

            async def rebuild() -> None:
                # Up to three runs, until one had kills stored between its read and its write. A
                # later run would mend what an earlier one left: each is checked at once. Once
                # a fight's battle exists each kill of it (posted in time order) joins it, so
                # no kill is loose but while the fights open (before the first run).
                await asyncio.sleep(1)
                for _ in range(3):
                    outputs.append(await run("battles", "rebuild", "--db", str(db)))
                    assert loose(db) == [], outputs
                    if "stored while it ran" in outputs[-1]:
                        return

            posting = asyncio.gather(*(post(kills) for kills in streams))
            await rebuild()
            assert not posting.done()
            await posting

            async def stored() -> bool:
                with closing(sqlite3.connect(db)) as conn:
                    return bool(conn.execute("SELECT count(*) FROM kills").fetchone()[0] == 795)

            await until(stored, 30)
        server.terminate()  # its last batch's battles committed with the kills
        assert loose(db) == []
        here = battles_in(db)
        assert sorted(len(k) for k, *_ in here.values()) == [163, 174, 458]
        assert here == await rebuilt_after(db, tmp_path)
        assert "stored while it ran" in outputs[-1], outputs  # the window between its read and write was hit
    finally:
        server.stop()
