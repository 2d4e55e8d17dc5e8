"""RFC 6455 framing rules for client frames, with a raw socket against the real app: unmasked
frames get close 1002, masked ones work however the bytes are split, and the message limit is
exactly KILLBOARD_WS_MAX_MESSAGE bytes (4,096 pass, 4,097 get 1009)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
from typing import Any

import rawws

PING = json.dumps({"action": "ping"}).encode()


async def reply(reader: asyncio.StreamReader) -> tuple[int, Any]:
    """The next frame: (1, parsed JSON) for text, (8, close code) for a close."""
    opcode, data = await asyncio.wait_for(rawws.read_frame(reader), 5)
    if opcode == 0x8:
        return opcode, struct.unpack("!H", data[:2])[0]
    return opcode, json.loads(data)


async def test_unmasked_client_frame_is_closed_with_1002(make_client: Any) -> None:
    client = await make_client()
    reader, writer = await rawws.connect(client.server.host, client.server.port)
    writer.write(rawws.masked_frame(PING))
    assert (await reply(reader))[1]["action"] == "pong"
    writer.write(rawws.unmasked_frame(PING))
    assert await reply(reader) == (0x8, 1002)
    writer.close()


async def test_unmasked_frame_sent_with_the_upgrade_request_is_closed_with_1002(make_client: Any) -> None:
    client = await make_client()
    host, port = client.server.host, client.server.port
    reader, writer = await asyncio.open_connection(host, port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        + rawws.unmasked_frame(PING)
    )
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
    assert await reply(reader) == (0x8, 1002)
    writer.close()


async def test_masked_frames_split_anywhere_are_read(make_client: Any) -> None:
    client = await make_client()
    reader, writer = await rawws.connect(client.server.host, client.server.port)
    # Three frames (short, 16-bit and 64-bit length forms are all legal for small payloads)
    # written one byte at a time, so every header is split across reads.
    padded = json.dumps({"action": "ping", "pad": "x" * 300}).encode()
    stream = rawws.masked_frame(PING) + rawws.masked_frame(padded) + rawws.masked_frame(PING)
    for i in range(len(stream)):
        writer.write(stream[i : i + 1])
        await writer.drain()
        if i % 50 == 0:
            await asyncio.sleep(0)
    for _ in range(3):
        assert (await reply(reader))[1]["action"] == "pong"
    writer.close()


async def test_message_limit_is_exactly_4096_bytes(make_client: Any) -> None:
    client = await make_client()
    reader, writer = await rawws.connect(client.server.host, client.server.port)
    head, tail = b'{"action":"ping","pad":"', b'"}'
    largest = head + b"x" * (4096 - len(head) - len(tail)) + tail
    assert len(largest) == 4096
    writer.write(rawws.masked_frame(largest))
    assert (await reply(reader))[1]["action"] == "pong"
    writer.write(rawws.masked_frame(b" " + largest))
    assert await reply(reader) == (0x8, 1009)
    writer.close()
