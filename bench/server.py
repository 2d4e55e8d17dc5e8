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


def trees(baseline: str | Path | None) -> list[tuple[str, Path]]:
    """This checkout, and `baseline` (another checkout, run alternately with it) if given."""
    mine = [("this tree", PROJECT_ROOT)]
    return [*mine, (f"baseline {baseline}", Path(baseline))] if baseline is not None else mine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Process:
    """A process serving HTTP on a free loopback port: its url and pid, a start that waits for the
    first 200 from /health, and a stop (SIGTERM, then SIGKILL). Subclasses say how to launch it."""

    name = "server"
    # Said when the process exits before answering (e.g. where its log is, what to install).
    hint = ""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_seconds = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def spawn(self) -> subprocess.Popen[bytes]:
        raise NotImplementedError

    async def start(self, timeout: float = 30) -> float:
        """Start and wait for the first 200 from /health; returns the seconds that took."""
        started = time.monotonic()
        self.proc = self.spawn()
        async with aiohttp.ClientSession() as session:
            while time.monotonic() - started < timeout:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.proc.returncode}{self.hint}")
                try:
                    async with session.get(self.url + "/health") as resp:
                        if resp.status == 200:
                            self.startup_seconds = time.monotonic() - started
                            return self.startup_seconds
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.005)
        raise TimeoutError(f"{self.name} did not answer /health within {timeout} s{self.hint}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class Server(Process):
    def __init__(
        self,
        db: Path,
        log_level: str = "WARNING",
        root: Path = PROJECT_ROOT,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
    ) -> None:
        """`root`: the checkout whose app.py runs (another one to compare, e.g. an older commit)."""
        super().__init__()
        self.db = db
        self.root = root
        self.args = args or []  # e.g. ["edge"]
        self.log = db.with_suffix(".log")
        self.hint = f"; see {self.log}"
        self.env = {
            **os.environ,
            "KILLBOARD_INGEST_TOKEN": TOKEN,
            "KILLBOARD_LIVE_MAX_AGE": "0",  # the bundled kills are years old: push them all
            "KILLBOARD_UPSTREAM": "off",  # no zKillboard follower in a benchmark
            "KILLBOARD_LOG_LEVEL": log_level,
            **(env or {}),
        }

    def spawn(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as log:
            return subprocess.Popen(
                [sys.executable, "app.py", "--port", str(self.port), "--db", str(self.db), *self.args],
                cwd=self.root,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=raise_fd_limit,  # the limit carries over exec: 10,000 sockets need it
            )
