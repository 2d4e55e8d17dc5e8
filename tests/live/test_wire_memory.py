"""Sockets with permessage-deflate negotiated stay small once they have had a kill: no compressor
per socket, and no decompressor kept for what the client sent. The real server process, 1,500 raw
sockets that offer deflate as Chrome does, subscribe with a compressed frame as browsers do,
receive one real kill each (deflated once for all), then sit idle."""

from __future__ import annotations

import asyncio
import json
import resource
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import rawws
from conftest import AUTH, TOKEN
from serverproc import ServerProcess
from test_clients import rss

SOCKETS = 1500
# Per idle subscriber, measured: ~18 KiB with deflate negotiated (bench/wire.py: 18.5 KiB at
# 10,000). aiohttp's compress=True would add a ~200 KB compressor to each socket that takes a
# kill; aiohttp's reader kept a decompressor (+15 KiB: 32.7 KiB a socket) once a client sent a
# compressed frame, before FreshInflateReader.
PER_SOCKET_BOUND = 20 * 1024


async def _settled(pid: int) -> int:
    last = rss(pid)
    for _ in range(20):
        await asyncio.sleep(0.25)
        now = rss(pid)
        if abs(now - last) < 64 * 1024:
            return now
        last = now
    return last


@pytest.mark.slow
async def test_idle_deflate_sockets_stay_small(tmp_path: Path, killmails: list[dict[str, Any]]) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if min(hard, 65536) < SOCKETS * 2 + 200:
        pytest.skip(f"needs {SOCKETS * 2 + 200} file descriptors, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    server = ServerProcess(tmp_path / "kb.sqlite3", env={"KILLBOARD_INGEST_TOKEN": TOKEN})
    await server.start()
    assert server.proc is not None
    writers = []
    pairs_all = []
    try:
        idle = await _settled(server.proc.pid)
        sub = json.dumps({"action": "sub", "channel": "kills"})
        for _ in range(SOCKETS // 50):
            pairs = await asyncio.gather(
                *(
                    rawws.connect("127.0.0.1", server.port, extensions="permessage-deflate; client_max_window_bits")
                    for _ in range(50)
                )
            )
            for reader, writer in pairs:
                assert writer.extensions == "permessage-deflate; server_no_context_takeover; client_no_context_takeover"  # type: ignore[attr-defined]
                writer.write(rawws.masked_deflated_frame(sub.encode()))
                assert json.loads((await rawws.read_frame_rsv(reader))[2])["action"] == "subscribed"
                writers.append(writer)
                pairs_all.append((reader, writer))
        async with aiohttp.ClientSession() as session:
            resp = await session.post(server.url + "/api/killmails", json=killmails[-1], headers=AUTH)
            assert resp.status == 202
        readers = [reader for reader, _ in pairs_all]
        for reader in readers:
            rsv, _, _ = await asyncio.wait_for(rawws.read_frame_rsv(reader), 20)
            assert rsv == 0x40  # deflated
        per_socket = (await _settled(server.proc.pid) - idle) / SOCKETS
        assert per_socket <= PER_SOCKET_BOUND, f"{per_socket / 1024:.1f} KiB per idle deflate socket"
    finally:
        for writer in writers:
            writer.close()
        server.stop()
