"""Memory: RSS of the server idle, then per idle subscriber at 1,000 and 10,000 sockets."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from .procstat import open_fds, rss_bytes
from .server import Server
from .wsclient import Pool


@dataclass
class MemoryRun:
    idle_rss: int
    # sockets -> (RSS, file descriptors) with that many idle subscribers connected
    with_sockets: dict[int, tuple[int, int]]

    def per_socket(self, n: int) -> float:
        return (self.with_sockets[n][0] - self.idle_rss) / n


async def settled_rss(pid: int) -> int:
    """RSS once it stops moving (the allocator and the kernel settle within a second or so)."""
    last = rss_bytes(pid)
    for _ in range(20):
        await asyncio.sleep(0.25)
        now = rss_bytes(pid)
        if abs(now - last) < 64 * 1024:
            return now
        last = now
    return last


async def run_memory(workdir: Path, steps: list[int], processes: int, deflate: bool = False) -> MemoryRun:
    """`deflate`: the sockets offer permessage-deflate (bench/wire.py)."""
    server = Server(workdir / f"memory-{time.monotonic_ns()}.sqlite3")
    pool = Pool(processes)
    try:
        await server.start()
        idle = await settled_rss(server.pid)
        out: dict[int, tuple[int, int]] = {}
        connected = 0
        for n in sorted(steps):
            await pool.connect("127.0.0.1", server.port, n - connected, deflate=deflate)  # subscribed, then idle
            connected = n
            out[n] = (await settled_rss(server.pid), open_fds(server.pid))
        return MemoryRun(idle, out)
    finally:
        try:
            await pool.shutdown()
        finally:
            server.stop()
