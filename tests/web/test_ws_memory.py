"""What sockets that never read may cost the server, measured on the real server process: 400
stored kills (the 82 real ones renumbered), 40+ sockets with a tiny receive buffer that ask for a
replay from seq 0 and never read. Each socket may hold a few MB (KILLBOARD_WS_SEND_BUFFER); the
encoded replay frames are shared; the sockets are dropped with 1013; the memory comes back."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import rawws
from killgen import filled
from serverproc import ServerProcess
from test_clients import rss

from killboard.kill.staticdata import StaticData

MiB = 1024 * 1024
KILLS = 400
SOCKETS = 48
# Before the byte budget this scenario grew RSS by ~570 MiB (48 sockets; ~1 GB with 40 in
# issue 10's run): up to 512 frames of 30-50 KB per socket, every socket its own copies. Now
# each socket may hold 4 MiB of frames, but they are the same shared bytes (every socket is
# stuck at the start of the same replay, each kill rendered once); the frame cache holds at
# most 16 MiB and each transport ~100 KB of copies. Measured after the warm-up: +1-4 MiB
# (+18 MiB when concurrent replays rendered the same kills each). The bound leaves room for
# allocator slack and a colder start.
PEAK_BOUND = 64 * MiB
# What may stay once every socket has gone: the allocator keeps what the cache used.
AFTER_BOUND = 32 * MiB
REPLAY = json.dumps({"action": "sub", "channel": "kills", "since": 0})


@pytest.mark.slow
async def test_sockets_that_never_read_a_replay_are_bounded_in_bytes_and_dropped(
    tmp_path: Path, static: StaticData, killmails: list[dict[str, Any]]
) -> None:
    db = tmp_path / "kb.sqlite3"
    await filled(db, static, killmails, KILLS)
    server = ServerProcess(db)
    await server.start()
    assert server.proc is not None
    pid = server.proc.pid
    try:
        async with aiohttp.ClientSession() as session:

            async def health() -> dict[str, Any]:
                async with session.get(server.url + "/health") as resp:
                    return await resp.json()

            # Warm up: one client that reads takes the whole replay (caches, buffers, code).
            ws = await session.ws_connect(server.url + "/ws")
            await ws.send_str(REPLAY)
            kills = 0
            while kills < KILLS:
                if (await ws.receive_json(timeout=30))["action"] == "kill":
                    kills += 1
            await ws.close()
            await asyncio.sleep(0.5)
            baseline = rss(pid)

            stalled = []
            for _ in range(SOCKETS):
                _reader, writer = await rawws.connect("127.0.0.1", server.port, rcvbuf=4096)
                await rawws.send_text(writer, REPLAY)
                stalled.append(writer)
            peak = baseline
            opened = time.monotonic()
            deadline = opened + 60
            state = await health()
            while time.monotonic() < deadline:
                peak = max(peak, rss(pid))
                state = await health()
                if state["clients"] == 0:
                    break
                await asyncio.sleep(0.2)
            grown = peak - baseline
            took = time.monotonic() - opened
            print(
                f"baseline {baseline / MiB:.1f} MiB, peak +{grown / MiB:.1f} MiB with {SOCKETS} sockets,",
                f"gone in {took:.1f} s",
            )
            assert grown < PEAK_BOUND, f"RSS grew by {grown / MiB:.0f} MiB with {SOCKETS} sockets that never read"
            # The server gave up on them (1013: replay stalled) and let go of every one.
            assert state["clients"] == 0, state
            assert state["slow_drops"] >= SOCKETS, state
            await asyncio.sleep(1.0)
            left = rss(pid) - baseline
            print(f"after: +{left / MiB:.1f} MiB")
            assert left < AFTER_BOUND, f"{left / MiB:.0f} MiB stayed after the sockets were gone"
            for writer in stalled:
                writer.close()
    finally:
        server.stop()
    log = server.log.read_text()
    assert log.count("replay stalled") >= SOCKETS, log[-2000:]
