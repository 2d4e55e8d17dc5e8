"""A database whose pages are damaged mid-file: the server starts, /health says `degraded`, and
reads that reach the damage answer 503 with a JSON body (a real server on a really damaged file)."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from pathlib import Path

import aiohttp
import pytest
from conftest import load_killmails
from serverproc import ServerProcess, import_real_kills


def damage_kills_pages(path: Path) -> list[int]:
    """Overwrite the middle leaf pages of the kills table with garbage; the schema, the
    dictionaries and every other table stay sound. Returns the page numbers hit."""
    with closing(sqlite3.connect(path)) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        leaves = [r[0] for r in conn.execute("SELECT pageno FROM dbstat WHERE name = 'kills' AND pagetype = 'leaf'")]
    assert len(leaves) >= 3
    hit = leaves[len(leaves) // 3 : 2 * len(leaves) // 3]
    with path.open("r+b") as f:
        for page in hit:
            f.seek((page - 1) * page_size)
            f.write(bytes((i * 37 + 11) % 256 for i in range(page_size)))
    return hit


async def test_damaged_pages_mid_file(tmp_path: Path) -> None:
    db = tmp_path / "kb.sqlite3"
    import_real_kills(db)
    assert damage_kills_pages(db)
    server = ServerProcess(db)
    try:
        await server.start()
        async with aiohttp.ClientSession() as session:
            # A read of a kill on a damaged page: 503 and a JSON message, not a 500 and a traceback.
            ids = [k["killmail_id"] for k in load_killmails()]
            statuses = []
            for killmail_id in ids:
                async with session.get(f"{server.url}/api/killmails/{killmail_id}") as resp:
                    statuses.append(resp.status)
                    if resp.status == 503:
                        assert resp.content_type == "application/json"
                        body = await resp.json()
                        assert "damaged" in body["error"]
            assert 503 in statuses and set(statuses) <= {200, 503}
            # A streamed page that reaches the damage after its status line went out cannot turn
            # into a 503: it is cut, so the client never takes a partial list for a whole one.
            with pytest.raises(aiohttp.ClientPayloadError):
                async with session.get(server.url + "/api/killmails?after=0&limit=500") as resp:
                    await resp.read()
            async with session.get(server.url + "/health") as resp:
                health = await resp.json()
            assert health["status"] == "degraded"
            assert health["database_damage"]
    finally:
        server.stop()
    log = server.log.read_text()
    assert "Traceback" not in log
    assert log.count("the database is damaged") <= 1  # logged once, not per request


@pytest.mark.parametrize("damaged", [False, True])
async def test_the_check_at_start_finds_damage_before_any_read(tmp_path: Path, damaged: bool) -> None:
    db = tmp_path / "kb.sqlite3"
    import_real_kills(db)
    if damaged:
        damage_kills_pages(db)
    server = ServerProcess(db)
    try:
        await server.start()
        async with aiohttp.ClientSession() as session:
            health: dict[str, object] = {}
            for _ in range(100):
                async with session.get(server.url + "/health") as resp:
                    health = await resp.json()
                if health["status"] == "degraded":
                    break
                await asyncio.sleep(0.05)
        assert (health["status"] == "degraded") is damaged
        assert bool(health["database_damage"]) is damaged
    finally:
        server.stop()
