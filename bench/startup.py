"""Start-up: from process start to the first 200 from /health."""

from __future__ import annotations

import time
from pathlib import Path

from .server import Server


async def run_startup(db: Path) -> float:
    server = Server(db)
    try:
        return await server.start()
    finally:
        server.stop()


async def fresh(workdir: Path) -> float:
    return await run_startup(workdir / f"startup-{time.monotonic_ns()}.sqlite3")
