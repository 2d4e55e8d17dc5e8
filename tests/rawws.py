"""A bare-bones WebSocket client over a plain TCP socket, for clients that misbehave on purpose:
one that stops reading (tiny receive buffer, never reads) or vanishes without a close."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
import zlib


def masked_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A client frame: FIN set, masked as RFC 6455 requires of clients."""
    mask = os.urandom(4)
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def masked_deflated_frame(payload: bytes) -> bytes:
    """A client text frame compressed as permessage-deflate with no context takeover has it (a
    raw deflate stream of its own, sync flush, 00 00 ff ff removed, RSV1 set): as browsers send."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    deflated = (compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
    frame = masked_frame(deflated)
    return bytes([frame[0] | 0x40]) + frame[1:]


async def connect(
    host: str, port: int, path: str = "/ws", rcvbuf: int | None = None, extensions: str | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a socket; with `extensions`, offer them (Sec-WebSocket-Extensions) and keep the
    server's answer in `writer.extensions` (None when it declined)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        # Set before connect so the advertised window stays small: the server's sends back up fast.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=2**16)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            + (f"Sec-WebSocket-Extensions: {extensions}\r\n" if extensions else "")
            + "\r\n"
        ).encode()
    )
    await writer.drain()
    status = await reader.readuntil(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 101"), status
    answer = [
        line.split(b":", 1)[1].strip().decode()
        for line in status.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-extensions:")
    ]
    writer.extensions = answer[0] if answer else None  # type: ignore[attr-defined]
    return reader, writer


async def read_frame_rsv(reader: asyncio.StreamReader) -> tuple[int, int, bytes]:
    """The next server frame: (first byte's RSV bits, opcode, payload)."""
    first, second = await reader.readexactly(2)
    n = second & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", await reader.readexactly(2))
    elif n == 127:
        (n,) = struct.unpack("!Q", await reader.readexactly(8))
    return first & 0x70, first & 0x0F, await reader.readexactly(n)


async def send_text(writer: asyncio.StreamWriter, text: str) -> None:
    writer.write(masked_frame(text.encode()))
    await writer.drain()


def unmasked_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A frame as a server sends it: no mask (from a client, RFC 6455 says close 1002)."""
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 126]) + struct.pack("!H", n)
    else:
        head = bytes([0x80 | opcode, 127]) + struct.pack("!Q", n)
    return head + payload


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """The next server frame: (opcode, payload)."""
    _, opcode, payload = await read_frame_rsv(reader)
    return opcode, payload


def inflate_strictly(payload: bytes, bits: int) -> bytes:
    """Inflate one permessage-deflate message (00 00 ff ff appended) as a client whose window is
    `bits` must: one output byte a call, so every match is copied from the window. zlib checks a
    match's distance against the window only when it reaches back before the current call's
    output: one call for the whole message accepts matches up to the message's length back."""
    inflater = zlib.decompressobj(-bits)
    out = []
    data = payload + b"\x00\x00\xff\xff"
    while True:
        chunk = inflater.decompress(data, 1)
        data = inflater.unconsumed_tail
        if not chunk and not data:  # no input left and nothing more to copy out
            return b"".join(out)
        out.append(chunk)
