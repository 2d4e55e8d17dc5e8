"""The real server (`python app.py`) as a separate process on a free loopback port."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from killboard.config import PROJECT_ROOT

from .procstat import raise_fd_limit

TOKEN = "bench-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(
        self,
        db: Path,
        log_level: str = "WARNING",
        root: Path = PROJECT_ROOT,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
    ) -> None:
        """`root`: the checkout whose app.py runs (another one to compare, e.g. an older commit)."""
        self.db = db
        self.root = root
        self.args = args or []  # e.g. ["edge"]
        self.port = free_port()
        self.log = db.with_suffix(".log")
        self.env = {
            **os.environ,
            "KILLBOARD_INGEST_TOKEN": TOKEN,
            "KILLBOARD_LIVE_MAX_AGE": "0",  # the bundled kills are years old: push them all
            "KILLBOARD_UPSTREAM": "off",  # no zKillboard follower in a benchmark
            "KILLBOARD_LOG_LEVEL": log_level,
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_seconds = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self, timeout: float = 30) -> float:
        """Start and wait for the first 200 from /health; returns the seconds that took."""
        with self.log.open("ab") as log:
            started = time.monotonic()
            self.proc = subprocess.Popen(
                [sys.executable, "app.py", "--port", str(self.port), "--db", str(self.db), *self.args],
                cwd=self.root,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=raise_fd_limit,  # the limit carries over exec: 10,000 sockets need it
            )
        async with aiohttp.ClientSession() as session:
            while time.monotonic() - started < timeout:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log}")
                try:
                    async with session.get(self.url + "/health") as resp:
                        if resp.status == 200:
                            self.startup_seconds = time.monotonic() - started
                            return self.startup_seconds
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.005)
        raise TimeoutError(f"server did not answer /health within {timeout} s; see {self.log}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
