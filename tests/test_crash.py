"""An acknowledged killmail survives `kill -9` of the server and is processed after restart."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
from serverproc import ServerProcess

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
