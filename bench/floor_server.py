"""The fan-out bench's floor (`bench.fanout --floor`): a Python server that does nothing per kill
but deflate its frame once and hand the same bytes to every socket's asyncio transport.

It speaks just enough of the protocols the bench uses, on one port: `GET /health` (200), `POST
/frame` with a plain kill frame's bytes (as bench/fanout_node.js takes them: deflated once with
the hub's own `live.wire.deflate`, level 6 and a 15-bit window, then written to every subscribed
socket, each write one `transport.write` of one bytes object), and the WebSocket upgrade of
`/ws` with the hub's own permessage-deflate answer (`live.wire.negotiate`); a socket's first
message is answered `{"action":"subscribed"}`. No HTTP framework, no storage, no enrichment, no
byte budgets: what is left of a delivery is the kernel's send (which any server pays, in any
language) and asyncio's write, so its CPU per delivery beside Node's says how much of a 0.5x
budget is left for everything a killboard does with a kill.

    python -m bench.floor_server PORT
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import sys

from killboard.live.wire import deflate, frame_header, negotiate

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC11B65"
SUBSCRIBED = frame_header(len(b'{"action":"subscribed","channels":["kills"]}')) + (
    b'{"action":"subscribed","channels":["kills"]}'
)


class Connection(asyncio.Protocol):
    """One TCP connection: HTTP requests until it upgrades, then a subscriber."""

    def __init__(self, subscribers: dict[Connection, bool]) -> None:
        self.subscribers = subscribers
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.upgraded = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.subscribers.pop(self, None)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if self.upgraded:
            if self not in self.subscribers:  # its first message: the subscription
                self.subscribers[self] = True
                self.transport.write(SUBSCRIBED)
            return  # later frames (pongs) are not read
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head, rest = self.buffer[:end].decode("latin-1"), self.buffer[end + 4 :]
            lines = head.split("\r\n")
            method, path = lines[0].split()[:2]
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
            length = int(headers.get("content-length", "0"))
            if len(rest) < length:
                return
            body, self.buffer = rest[:length], rest[length:]
            if path == "/ws" and headers.get("upgrade", "").lower() == "websocket":
                self._upgrade(headers)
                return
            if method == "POST" and path == "/frame":
                self._broadcast(body)
                self.transport.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
            else:
                answer = b'{"status":"ok"}'
                self.transport.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(answer), answer)
                )

    def _upgrade(self, headers: dict[str, str]) -> None:
        assert self.transport is not None
        accept = base64.b64encode(hashlib.sha1(headers["sec-websocket-key"].encode() + GUID).digest())
        _, extension = negotiate(headers.get("sec-websocket-extensions"))
        response = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        response += b"Sec-WebSocket-Accept: " + accept + b"\r\n"
        if extension is not None:
            response += b"Sec-WebSocket-Extensions: " + extension.encode() + b"\r\n"
        self.transport.write(response + b"\r\n")
        self.upgraded = True
        self.buffer = b""

    def _broadcast(self, frame: bytes) -> None:
        """The frame deflated once (RSV1) and the same bytes written to every subscriber."""
        payload = deflate(frame, 6)
        data = frame_header(len(payload), 0x40) + payload
        for sub in self.subscribers:
            assert sub.transport is not None
            sub.transport.write(data)


async def serve(port: int) -> None:
    subscribers: dict[Connection, bool] = {}
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(subscribers), "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
