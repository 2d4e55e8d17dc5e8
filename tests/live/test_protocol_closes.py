"""RFC 6455 and RFC 7692: every malformed client frame gets the close code the RFCs name (1002 a
protocol error, 1007 data that is not what its type says), with a reason, over a raw socket
against the real app, with and without permessage-deflate negotiated."""

from __future__ import annotations

import asyncio
import os
import struct
import zlib
from typing import Any

import pytest
import rawws

PING = b'{"action":"ping"}'
DEFLATE = "permessage-deflate"


def frame(payload: bytes, first: int) -> bytes:
    """A masked client frame with the first byte exactly as given (FIN, RSV bits, opcode)."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = bytes([first, 0x80 | n])
    elif n < 65536:
        head = bytes([first, 0x80 | 126]) + struct.pack("!H", n)
    else:
        head = bytes([first, 0x80 | 127]) + struct.pack("!Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def deflated(data: bytes) -> bytes:
    """`data` as permessage-deflate sends it: raw deflate, sync flush, 00 00 ff ff removed."""
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return (c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]


def finished(data: bytes) -> bytes:
    """`data` as one raw deflate stream ended by a final block (BFINAL=1)."""
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush(zlib.Z_FINISH)


def close_payload(code: int) -> bytes:
    return struct.pack("!H", code)


# (name, the bytes the client sends, the close code the RFCs ask for, offer deflate?)
CASES: list[tuple[str, bytes, int, bool]] = [
    ("ping with RSV1 (control frames are never compressed)", frame(b"", 0x80 | 0x40 | 0x9), 1002, True),
    ("pong with RSV1", frame(b"", 0x80 | 0x40 | 0xA), 1002, True),
    ("close with RSV1", frame(close_payload(1000), 0x80 | 0x40 | 0x8), 1002, True),
    ("invalid deflate data", frame(b"\xff\xff\xff\xff\xff", 0x80 | 0x40 | 0x1), 1007, True),
    ("bytes after the final deflate block", frame(finished(PING) + b"garbage", 0x80 | 0x40 | 0x1), 1007, True),
    ("RSV1 on a continuation frame", frame(deflated(PING)[:4], 0x40 | 0x1) + frame(b"x", 0x80 | 0x40), 1002, True),
    ("RSV1 without deflate negotiated", frame(deflated(PING), 0x80 | 0x40 | 0x1), 1002, False),
    ("RSV2", frame(PING, 0x80 | 0x20 | 0x1), 1002, True),
    ("RSV3", frame(PING, 0x80 | 0x10 | 0x1), 1002, False),
    ("reserved data opcode 3", frame(PING, 0x80 | 0x3), 1002, False),
    ("reserved data opcode 7", frame(PING, 0x80 | 0x7), 1002, True),
    ("reserved control opcode 0xB", frame(b"", 0x80 | 0xB), 1002, False),
    ("reserved control opcode 0xF", frame(b"", 0x80 | 0xF), 1002, True),
    ("fragmented ping", frame(b"a", 0x9) + frame(b"b", 0x80), 1002, False),
    ("ping payload over 125 bytes", frame(b"x" * 126, 0x80 | 0x9), 1002, False),
    ("close payload over 125 bytes", frame(close_payload(1000) + b"x" * 124, 0x80 | 0x8), 1002, True),
    ("continuation without a start", frame(PING, 0x80 | 0x0), 1002, False),
    ("a new text frame inside a fragmented one", frame(b"{", 0x1) + frame(b"}", 0x80 | 0x1), 1002, False),
    ("invalid UTF-8 in a text frame", frame(b'{"a":"\xff\xfe"}', 0x80 | 0x1), 1007, False),
    ("invalid UTF-8 in a deflated text frame", frame(deflated(b'{"a":"\xc3\x28"}'), 0x80 | 0x40 | 0x1), 1007, True),
    ("invalid UTF-8 split over fragments", frame(b'{"a":"\xce', 0x1) + frame(b'\xba\xff"}', 0x80), 1007, False),
    ("close payload of one byte", frame(b"\x03", 0x80 | 0x8), 1002, False),
    ("invalid UTF-8 in a close reason", frame(close_payload(1000) + b"\xff", 0x80 | 0x8), 1007, False),
    *[
        (f"close code {code}", frame(close_payload(code), 0x80 | 0x8), 1002, False)
        for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535)
    ],
]


async def closed_with(reader: asyncio.StreamReader) -> tuple[int, str]:
    """Read frames until the server's close: (its code, its reason)."""
    while True:
        opcode, data = await asyncio.wait_for(rawws.read_frame(reader), 5)
        if opcode == 0x8:
            return struct.unpack("!H", data[:2])[0], data[2:].decode()


@pytest.mark.parametrize(("name", "data", "code", "offer"), CASES, ids=[c[0] for c in CASES])
async def test_malformed_frame_gets_the_rfc_close_code(
    make_client: Any, name: str, data: bytes, code: int, offer: bool
) -> None:
    client = await make_client()
    reader, writer = await rawws.connect(client.server.host, client.server.port, extensions=DEFLATE if offer else None)
    assert (writer.extensions is not None) == offer  # type: ignore[attr-defined]
    writer.write(data)
    got, reason = await closed_with(reader)
    assert got == code, f"{name}: closed with {got} ({reason!r}), the RFC says {code}"
    assert reason, f"{name}: closed with {got} and no reason"
    writer.close()


VALID_CLOSES = (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999)


@pytest.mark.parametrize("code", VALID_CLOSES)
async def test_valid_close_codes_are_answered_normally(make_client: Any, code: int) -> None:
    client = await make_client()
    reader, writer = await rawws.connect(client.server.host, client.server.port)
    writer.write(frame(close_payload(code) + b"bye", 0x80 | 0x8))
    got, _ = await closed_with(reader)
    assert got in (code, 1000), got  # echoed, or a plain normal closure
    writer.close()


@pytest.mark.parametrize(
    "data",
    [
        frame(deflated(PING), 0x80 | 0x40 | 0x1),  # the usual: sync flush, tail removed
        frame(finished(PING), 0x80 | 0x40 | 0x1),  # RFC 7692 7.2.3.4: a final block instead
        frame(deflated(PING)[:5], 0x40 | 0x1) + frame(b"", 0x80 | 0x9) + frame(deflated(PING)[5:], 0x80),
        frame(b"", 0x80 | 0x9) + frame(PING, 0x80 | 0x1),  # a plain frame on a deflate socket
    ],
    ids=["sync flush", "final block", "fragmented with a ping between", "plain"],
)
async def test_well_formed_deflated_messages_are_read(make_client: Any, data: bytes) -> None:
    client = await make_client()
    reader, writer = await rawws.connect(client.server.host, client.server.port, extensions=DEFLATE)
    writer.write(data)
    while True:
        _, opcode, payload = await asyncio.wait_for(rawws.read_frame_rsv(reader), 5)
        assert opcode != 0x8, payload
        if opcode == 0x1:
            break
    writer.close()
