"""Many cheap WebSocket subscribers, spread over worker processes.

A benchmark with 10,000 subscribers on two cores measures the clients as much as the server
unless each client is cheap: this one is a bare asyncio.Protocol that parses frame headers,
reads the kill id from the first bytes of a kill frame, answers pings, and never decodes or
parses the rest (a deflated frame: only enough of it is inflated to read the id). Each worker
process runs one event loop with its share of the connections and takes commands from the
benchmark over a pipe.
"""

from __future__ import annotations

import asyncio
import base64
import multiprocessing
import os
import re
import socket
import struct
import time
import zlib
from array import array
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from .procstat import raise_fd_limit

KILL_ID = re.compile(rb'"killmail_id":(\d+)')
SUB_FRAME_TEXT = b'{"action":"sub","channel":"kills"}'
CONNECT_CONCURRENCY = 64


def masked(payload: bytes, opcode: int) -> bytes:
    """A client frame (clients must mask); small payloads only."""
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + body


def _given(protocol: Subscriber) -> Callable[[], Subscriber]:
    """A protocol factory for create_connection that hands over a protocol made already."""
    return lambda: protocol


class Subscriber(asyncio.Protocol):
    """One socket: handshake, subscribe, then record (kill id, arrival time) of each kill frame."""

    def __init__(
        self,
        host: str,
        port: int,
        record: Callable[[int, float], None],
        subscribe: bool = True,
        path: str = "/ws",
        deflate: bool = False,
    ) -> None:
        """`path` may carry `?lang=`; `deflate` offers permessage-deflate as Chrome does."""
        self.host, self.port = host, port
        self.path, self.deflate = path, deflate
        self.bytes = 0  # every byte received after the handshake, frame headers included
        self.record = record
        self.subscribe = subscribe
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.upgraded = False
        self.close_code: int | None = None
        self.kills = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" if self.deflate else ""
        transport.write(
            (
                f"GET {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n"
            ).encode()
        )

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        self.buf += data
        if not self.upgraded:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.buf.startswith(b"HTTP/1.1 101"):
                self._fail(RuntimeError(bytes(self.buf[:80]).decode(errors="replace")))
                return
            del self.buf[: end + 4]
            self.upgraded = True
            assert self.transport is not None
            if self.subscribe:
                self.transport.write(masked(SUB_FRAME_TEXT, 0x1))
            elif not self.ready.done():
                self.ready.set_result(None)
        buf = self.buf
        while len(buf) >= 2:
            opcode, n, pos = buf[0] & 0x0F, buf[1] & 0x7F, 2
            deflated = buf[0] & 0x40
            if n == 126:
                if len(buf) < 4:
                    return
                n, pos = struct.unpack_from("!H", buf, 2)[0], 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n, pos = struct.unpack_from("!Q", buf, 2)[0], 10
            if len(buf) < pos + n:
                return
            if deflated:
                head = zlib.decompressobj(-15).decompress(bytes(buf[pos : pos + min(n, 400)]), 160)
            else:
                head = bytes(buf[pos : pos + min(n, 160)])
            payload = bytes(buf[pos : pos + n]) if opcode in (0x8, 0x9) else b""
            del buf[: pos + n]
            self.bytes += pos + n
            self._frame(opcode, head, payload, now)

    def _frame(self, opcode: int, head: bytes, payload: bytes, now: float) -> None:
        assert self.transport is not None
        if opcode == 0x1:
            if head.startswith(b'{"action":"kill"'):
                match = KILL_ID.search(head)
                if match:
                    self.kills += 1
                    self.record(int(match.group(1)), now)
            elif head.startswith(b'{"action":"subscribed"') and not self.ready.done():
                self.ready.set_result(None)
        elif opcode == 0x9:  # ping: answer, or the server's heartbeat closes us
            self.transport.write(masked(payload[:125], 0xA))
        elif opcode == 0x8:
            self.close_code = struct.unpack_from("!H", payload)[0] if len(payload) >= 2 else 1005
            self.transport.close()

    def _fail(self, exc: BaseException) -> None:
        if not self.ready.done():
            self.ready.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._fail(exc or ConnectionResetError("closed"))


class Worker:
    """The state of one worker process: its sockets and what they received."""

    def __init__(self) -> None:
        self.subs: list[Subscriber] = []
        self.arrivals: dict[int, array[float]] = {}

    def record(self, kill_id: int, when: float) -> None:
        times = self.arrivals.get(kill_id)
        if times is None:
            times = self.arrivals[kill_id] = array("d")
        times.append(when)

    async def connect(
        self, host: str, port: int, count: int, subscribe: bool, path: str = "/ws", deflate: bool = False
    ) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
        failures = 0

        async def one() -> None:
            nonlocal failures
            async with gate:
                for _attempt in range(5):
                    sub = Subscriber(host, port, self.record, subscribe, path, deflate)
                    try:
                        sock = socket.socket()
                        sock.setblocking(False)
                        await loop.sock_connect(sock, (host, port))
                        await loop.create_connection(_given(sub), sock=sock)
                        await asyncio.wait_for(sub.ready, 30)
                        self.subs.append(sub)
                        return
                    except (OSError, TimeoutError, RuntimeError):
                        await asyncio.sleep(0.2)
                failures += 1

        started = time.monotonic()
        await asyncio.gather(*(one() for _ in range(count)))
        return {"connected": count - failures, "failed": failures, "seconds": time.monotonic() - started}

    def received(self) -> int:
        return sum(len(t) for t in self.arrivals.values())

    def traffic(self) -> dict[str, tuple[int, int]]:
        """Per kind of socket ("path deflate"): (bytes received, kill frames received)."""
        out: dict[str, tuple[int, int]] = {}
        for sub in self.subs:
            kind = f"{sub.path} {'deflate' if sub.deflate else 'plain'}"
            got, kills = out.get(kind, (0, 0))
            out[kind] = (got + sub.bytes, kills + sub.kills)
        return out

    def latencies(self, posted: dict[int, float]) -> bytes:
        out = array("d")
        for kill_id, times in self.arrivals.items():
            sent = posted.get(kill_id)
            if sent is not None:
                out.extend(t - sent for t in times)
        return out.tobytes()

    def close_all(self) -> None:
        for sub in self.subs:
            if sub.transport is not None:
                # RST, not FIN: 10,000 sockets in TIME_WAIT would eat the loopback's ports.
                sock = sub.transport.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sub.transport.close()
        self.subs.clear()
        self.arrivals.clear()


async def _serve(conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    worker = Worker()
    while True:
        command, *args = await loop.run_in_executor(None, conn.recv)
        if command == "connect":
            conn.send(await worker.connect(*args))
        elif command == "received":
            conn.send(worker.received())
        elif command == "traffic":
            conn.send(worker.traffic())
        elif command == "last":
            conn.send(max((t[-1] for t in worker.arrivals.values() if t), default=0.0))
        elif command == "latencies":
            conn.send(worker.latencies(args[0]))
        elif command == "closes":
            conn.send([s.close_code for s in worker.subs])
        elif command == "reset":
            worker.arrivals.clear()
            for sub in worker.subs:
                sub.bytes = sub.kills = 0
            conn.send(True)
        elif command == "close":
            worker.close_all()
            await asyncio.sleep(0.1)
            conn.send(True)
        elif command == "exit":
            worker.close_all()
            conn.send(True)
            return


def _main(conn: Connection) -> None:
    raise_fd_limit()
    asyncio.run(_serve(conn))


class Pool:
    """`processes` worker processes sharing `total` subscribers."""

    def __init__(self, processes: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.procs = []
        for _ in range(processes):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_main, args=(child,), daemon=True)
            proc.start()
            self.pipes.append(parent)
            self.procs.append(proc)

    async def _all(self, *command: Any) -> list[Any]:
        def call(pipe: Connection) -> Any:
            pipe.send(command)
            return pipe.recv()

        return list(await asyncio.gather(*(asyncio.to_thread(call, p) for p in self.pipes)))

    async def connect(
        self, host: str, port: int, total: int, subscribe: bool = True, path: str = "/ws", deflate: bool = False
    ) -> dict[str, Any]:
        share = [total // len(self.pipes) + (i < total % len(self.pipes)) for i in range(len(self.pipes))]

        def call(pipe: Connection, n: int) -> Any:
            pipe.send(("connect", host, port, n, subscribe, path, deflate))
            return pipe.recv()

        started = time.monotonic()
        results = await asyncio.gather(*(asyncio.to_thread(call, p, n) for p, n in zip(self.pipes, share, strict=True)))
        failed = sum(r["failed"] for r in results)
        if failed:
            raise RuntimeError(f"{failed} of {total} subscribers could not connect")
        return {"connected": sum(r["connected"] for r in results), "seconds": time.monotonic() - started}

    async def received(self) -> int:
        return sum(await self._all("received"))

    async def traffic(self) -> dict[str, tuple[int, int]]:
        out: dict[str, tuple[int, int]] = {}
        for part in await self._all("traffic"):
            for kind, (got, kills) in part.items():
                was = out.get(kind, (0, 0))
                out[kind] = (was[0] + got, was[1] + kills)
        return out

    async def latencies(self, posted: dict[int, float]) -> array[float]:
        out = array("d")
        for chunk in await self._all("latencies", posted):
            out.frombytes(chunk)
        return out

    async def last_arrival(self) -> float:
        """time.monotonic() of the last kill frame any subscriber received (one clock per machine)."""
        return max(await self._all("last"))

    async def close_codes(self) -> list[int | None]:
        return [code for codes in await self._all("closes") for code in codes]

    async def reset(self) -> None:
        await self._all("reset")

    async def close(self) -> None:
        await self._all("close")

    async def shutdown(self) -> None:
        try:
            await self._all("exit")
        finally:
            for proc in self.procs:
                proc.join(5)
                if proc.is_alive():
                    proc.kill()
