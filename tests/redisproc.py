"""A real redis-server on a free loopback port, without persistence: a restart comes back empty."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from serverproc import free_port, listens

REDIS = shutil.which("redis-server") or next((p for p in ("/usr/bin/redis-server",) if Path(p).exists()), None)


class RedisServer:
    def __init__(self, folder: Path, extra: list[str] | None = None, tls: tuple[Path, Path] | None = None) -> None:
        """`tls`: (certificate, key): serve TLS only (rediss://), no plain port."""
        if REDIS is None:
            pytest.skip("redis-server is not installed (Debian package redis-server; CI installs it)")
        self.folder = folder
        self.port = free_port()
        self.extra = extra or []
        self.tls = tls
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.tls is not None:
            return f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls[0]}"
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10) -> None:
        """Start it and wait for its answer, from this process (`serverproc.listens`): a port
        another suite's redis-server took meanwhile is traded for another (ServerProcess.start)."""
        for _ in range(5):
            if self._start(timeout):
                return
            self.port = free_port()
        raise RuntimeError(f"redis-server: no free port held after 5 tries ({self.folder / 'redis.log'})")

    def _start(self, timeout: float) -> bool:
        assert REDIS is not None
        ports = ["--dir", str(self.folder), "--port", str(self.port)]
        if self.tls is not None:
            ports = [
                "--dir",
                str(self.folder),
                "--port",
                "0",
                "--tls-port",
                str(self.port),
                "--tls-cert-file",
                str(self.tls[0]),
            ]
            ports += ["--tls-key-file", str(self.tls[1]), "--tls-auth-clients", "no"]
        with (self.folder / "redis.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [REDIS, *ports, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", *self.extra],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False  # it could not bind the port (redis.log says why): another one
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    if self.tls is None:
                        s.sendall(b"PING\r\n")
                        if s.recv(64)[:1] not in (b"+", b"-"):  # PONG, or NOAUTH with an ACL: it answers
                            continue
                    # With TLS: it accepts connections; the handshake is the client's test.
                    if listens(self.proc.pid, self.port):
                        return True
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"redis-server did not answer on port {self.port}")

    def stop(self) -> None:
        """SIGKILL: with persistence off, everything it held is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
