"""A kill's bytes on the wire: its JSON encoded once, and the kill frame spliced around it."""

from __future__ import annotations

import ujson


def encode(message: object) -> bytes:
    return ujson.dumps(message, ensure_ascii=False, escape_forward_slashes=False).encode()


def kill_frame(seq: int, body: bytes) -> bytes:
    """`{"action":"kill","seq":N,"data":{...}}` spliced around the kill's JSON, without re-encoding it."""
    return b'{"action":"kill","seq":%d,"data":%s}' % (seq, with_seq(seq, body))


def with_seq(seq: int, body: bytes) -> bytes:
    """The kill object with its sequence number as the first field."""
    return b'{"seq":%d,%s' % (seq, body[1:])


def body_of(seq: int, frame: bytes) -> bytes:
    """The kill's JSON as kill_frame(seq, body) was given it, back from the frame."""
    head = b'{"action":"kill","seq":%d,"data":{"seq":%d,' % (seq, seq)
    if not frame.startswith(head):
        raise ValueError(f"not the kill frame of seq {seq}")
    return b"{" + frame[len(head) : -1]
