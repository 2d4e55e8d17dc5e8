"""Writes by another process on the server's database reach its kept pages (killboard/web/foreign.py):
a name saved, battles deleted and rebuilt by `app.py battles rebuild`, each in a real second
process, show on the next views within a second, without a new kill; the server's own writes
do not empty the caches."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from battlefights import fight, post_all
from conftest import Client, until
from test_viewcache import post, row_of

from killboard.config import PROJECT_ROOT
from killboard.web.keys import config_key, foreign_key


async def other_process(*args: str) -> str:
    """Run a Python process of its own on this checkout (without blocking the server's loop)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *args, cwd=PROJECT_ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode()
    return out.decode()


SAVE_NAME = """
import asyncio, sys
from pathlib import Path
from killboard.storage.store import Store
async def main():
    store = await Store.open(Path(sys.argv[1]))
    await store.save_names({int(sys.argv[2]): (sys.argv[3], "character")})
    await store.close()
asyncio.run(main())
"""

SQL = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA busy_timeout = 5000")
db.executescript(sys.argv[2])
db.close()
"""


async def test_a_name_saved_by_another_process_shows_in_kept_rows(
    client: Client, killmails: list[dict[str, Any]]
) -> None:
    km = killmails[5]
    await post(client, km)
    victim = km["victim"]["character_id"]
    html = await (await client.get("/")).text()
    assert "Named Elsewhere" not in html
    etag = (await client.get("/")).headers["ETag"]
    assert (await client.get("/", headers={"If-None-Match": etag})).status == 304  # kept
    # The server's own writes (the kill above) are not another process's.
    await asyncio.sleep(0.6)
    assert client.server.app[foreign_key].noticed == 0

    db = str(client.server.app[config_key].db_path)
    await other_process("-c", SAVE_NAME, db, str(victim), "Named Elsewhere")

    async def shown() -> bool:
        return "Named Elsewhere" in row_of(await (await client.get("/")).text(), km["killmail_id"])

    await until(shown, timeout=2)
    assert client.server.app[foreign_key].noticed >= 1


async def test_battles_deleted_and_rebuilt_by_other_processes_show_on_the_kept_pages(client: Client) -> None:
    kills = fight("30001155")
    await post_all(client, kills)
    [battle] = (await (await client.get("/api/battles")).json())["battles"]
    kept = await client.get("/battles")
    html, etag = await kept.text(), kept.headers["ETag"]
    assert f"/battle/{battle['battle_id']}" in html
    assert (await client.get("/battles", headers={"If-None-Match": etag})).status == 304
    db = str(client.server.app[config_key].db_path)

    # Battles gone, as in a database from before battles existed: no new kill, the last seq stays.
    await other_process("-c", SQL, db, "DELETE FROM battle_kills; DELETE FROM battles;")

    async def listed() -> list[dict[str, Any]]:
        return list((await (await client.get("/api/battles")).json())["battles"])

    async def gone() -> bool:
        page = await (await client.get("/battles")).text()
        return await listed() == [] and f"/battle/{battle['battle_id']}" not in page

    await until(gone, timeout=2)

    # `app.py battles rebuild` in a process of its own puts them back.
    out = await other_process("app.py", "battles", "rebuild", "--db", db)
    assert "battles rebuilt: 1 battles" in out

    async def back() -> bool:
        found = await listed()
        return len(found) == 1 and found[0]["kill_count"] == battle["kill_count"]

    await until(back, timeout=2)
    rebuilt = (await listed())[0]["battle_id"]
    assert json.loads(await (await client.get(f"/api/battles/{rebuilt}")).text())["kill_count"] == len(kills)
    assert f"/battle/{rebuilt}" in await (await client.get("/battles")).text()


async def test_an_idle_server_glances_without_waking_the_writers_thread(
    client: Client, killmails: list[dict[str, Any]]
) -> None:
    """The poll's glance (a connection of the loop's own) sees no commit on an idle server, so
    the writer's thread is not asked; the server's own commit makes it ask once, and it is
    still not another process's."""
    foreign = client.server.app[foreign_key]
    await asyncio.sleep(0.3)
    before = foreign.exact
    await asyncio.sleep(1.1)  # four polls or more, nothing committed
    assert foreign.exact == before
    await post(client, killmails[5])

    async def looked() -> bool:
        return foreign.exact > before

    await until(looked, timeout=2)
    assert foreign.noticed == 0
