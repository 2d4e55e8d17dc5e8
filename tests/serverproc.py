"""Run the real server as a subprocess (`python app.py`) on a free loopback port, and the
benchmarks (`python -m bench...`) that start it themselves."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import aiohttp

from killboard.config import PROJECT_ROOT


def run_bench(module: str, args: list[str], results: Path, timeout: float) -> tuple[str, Any]:
    """`python -m <module> <args> --json <results>` from the project root: (what it printed, the
    figures it wrote). Fails the test, with the end of its stderr, unless it exits 0."""
    done = subprocess.run(
        [sys.executable, "-m", module, *args, "--json", str(results)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, json.loads(results.read_text())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def import_real_kills(db: Path) -> Path:
    """A database of the 82 bundled real kills, written by the real `app.py import`, its WAL
    folded in (so the file alone is the whole database, as tests that damage it need)."""
    proc = subprocess.run(
        [sys.executable, "app.py", "import", "--no-upstream", "--db", str(db), "tests/data/killmails"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        timeout=60,
    )
    assert b"imported 82" in proc.stdout, proc.stderr[-2000:]
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return db


def listens(pid: int, port: int) -> bool:
    """Whether process `pid` holds a socket listening on `port` (Linux: its fds' socket inodes
    against the kernel's TCP tables)."""
    inodes: set[str] = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port and inode in inodes:  # 0A: LISTEN
                    return True
    return False


class ServerProcess:
    def __init__(self, db: Path, env: dict[str, str] | None = None, args: list[str] | None = None) -> None:
        self.db = db
        self.port = free_port()
        self.env = {**os.environ, "KILLBOARD_LIVE_MAX_AGE": "0", "KILLBOARD_UPSTREAM": "off", **(env or {})}
        self.args = args or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = db.with_suffix(".log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 15) -> None:
        """Start it and wait for its /health. The free port is free only when it is picked:
        another test's server (another worker, a second suite) may take it first. Then this one
        exits "address already in use" while the other answers /health, and the test talked to
        the wrong server. So the answer counts only once this process holds the listening
        socket, and a port taken meanwhile is traded for another."""
        for _ in range(5):
            if await self._start(timeout):
                return
            self.port = free_port()
        raise RuntimeError(f"no free port held after 5 tries: {self.log.read_text()[-2000:]}")

    async def _start(self, timeout: float) -> bool:
        """Whether it started; False if its port was taken before it could bind it."""
        with self.log.open("ab") as log:
            start = log.tell()
            self.proc = subprocess.Popen(
                [sys.executable, "app.py", "--port", str(self.port), "--db", str(self.db), *self.args],
                cwd=PROJECT_ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    said = self.log.read_bytes()[start:].decode(errors="replace")
                    if f"cannot listen on 127.0.0.1:{self.port}: address already in use" in said:
                        return False
                    raise RuntimeError(f"server exited with {self.proc.returncode}: {said[-2000:]}")
                try:
                    async with session.get(self.url + "/health") as resp:
                        if resp.status == 200 and listens(self.proc.pid, self.port):
                            return True
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        raise TimeoutError(f"server did not answer /health in {timeout}s")

    def kill(self) -> None:
        """SIGKILL: no cleanup, no flush; only what SQLite committed survives."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 10) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
