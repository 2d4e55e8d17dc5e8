"""The real server (`python app.py`) on each event loop KILLBOARD_LOOP names: a plain and a
permessage-deflate subscriber get a stored kill; an unknown loop stops the start with one line."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from serverproc import ServerProcess, free_port

from killboard.config import PROJECT_ROOT

TOKEN = "loop-token"
SUB = json.dumps({"action": "sub", "channel": "kills"})


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
async def test_the_server_delivers_on_each_loop(tmp_path: Path, killmails: list[dict[str, Any]], loop: str) -> None:
    server = ServerProcess(tmp_path / "kb.sqlite3", env={"KILLBOARD_LOOP": loop, "KILLBOARD_INGEST_TOKEN": TOKEN})
    try:
        await server.start()
        async with aiohttp.ClientSession() as session:
            plain = await session.ws_connect(server.url + "/ws", compress=0)
            deflate = await session.ws_connect(server.url + "/ws", compress=15)
            assert not plain.compress and deflate.compress
            for ws in (plain, deflate):
                await ws.send_str(SUB)
                assert (await ws.receive_json(timeout=5))["action"] == "subscribed"
            km = killmails[0]
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with session.post(server.url + "/api/killmails", json=km, headers=headers) as resp:
                assert resp.status == 202, await resp.text()
            for ws in (plain, deflate):
                frame = await ws.receive_json(timeout=10)
                assert frame["action"] == "kill" and frame["data"]["killmail_id"] == km["killmail_id"]
                await ws.close()
    finally:
        server.stop()


async def test_an_unknown_loop_stops_the_start_with_one_line(tmp_path: Path) -> None:
    env = {"KILLBOARD_LOOP": "tokio", "KILLBOARD_UPSTREAM": "off", "PATH": "/usr/bin:/bin"}
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "app.py", "--port", str(free_port()), "--db", str(tmp_path / "kb.sqlite3")],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == "KILLBOARD_LOOP must be asyncio or uvloop, got 'tokio'"
