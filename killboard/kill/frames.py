"""A kill's bytes on the wire: its JSON encoded once, and the kill frame spliced around it."""

from __future__ import annotations

import re

import orjson
import ujson

# Attackers encoded per call at most: the encoder holds the GIL for a whole call, so a 10,000-attacker
# kill (9 MB enriched) encoded in one call stalled the event loop ~120 ms even from a thread;
# 250 attackers are ~3 ms, and the loop can take the GIL back between calls.
ATTACKER_CHUNK = 250
# How orjson writes a float from 1e-5 to 1e-4 (`0.00001`, ujson `1e-5`); a regex finds it in a
# kill's 29 KB in ~9 us, `in` in ~15 (its skip table stalls on the many `0`s of a kill's numbers).
_SMALL_FLOAT = re.compile(rb"\.0000")


def _dumps(message: object) -> bytes:
    """ujson's `dumps(ensure_ascii=False, escape_forward_slashes=False)`, byte for byte, ~3.5x
    faster: orjson writes the same UTF-8, unescaped `/` and the same shortest floats (a 29 KB
    kill: ~40 us with the check below against ~140 us, the biggest part of a broadcast kill's CPU
    in issue 21's profile).
    Where they differ, ujson writes it as before: what orjson refuses (a lone surrogate, an int
    past 64 bits, a non-string key), and floats from 1e-5 to 1e-4, which orjson writes as
    `0.0000…` and ujson as `…e-5` (any `.0000` in the output, a string's too, goes to ujson).
    NaN and infinities (null here, bare NaN there) are kept out by validation."""
    try:
        out = orjson.dumps(message)
    except TypeError:  # orjson.JSONEncodeError
        return _ujson(message)
    return _ujson(message) if _SMALL_FLOAT.search(out) else out


def _ujson(message: object) -> bytes:
    return ujson.dumps(message, ensure_ascii=False, escape_forward_slashes=False).encode()


def encode_ascii(message: object) -> bytes:
    """`ujson.dumps(message, escape_forward_slashes=False)` byte for byte: every code point past
    ASCII escaped, so a lone surrogate round-trips (stored documents, the inbox). orjson's bytes
    where they are the same (pure ASCII, no float of 1e-5..1e-4: ESI bodies), ujson's otherwise."""
    try:
        out = orjson.dumps(message)
    except TypeError:  # orjson.JSONEncodeError
        out = b""
    if out and out.isascii() and not _SMALL_FLOAT.search(out):
        return out
    return ujson.dumps(message, escape_forward_slashes=False).encode()


def encode(message: object) -> bytes:
    """The message's JSON, byte for byte what one ujson call gives; a kill with many attackers
    is encoded in pieces (see ATTACKER_CHUNK) and spliced."""
    if not isinstance(message, dict):
        return _dumps(message)
    attackers = message.get("attackers")
    if not isinstance(attackers, list) or len(attackers) <= ATTACKER_CHUNK:
        return _dumps(message)
    # The kill without its attackers, then the attackers in pieces where the empty list was.
    # `"attackers":[]` cannot occur inside a JSON string (its quotes would be escaped), and a
    # kill has no other field of that name, so the first occurrence is the top-level key.
    shell = _dumps({**message, "attackers": []})
    at = shell.index(b'"attackers":[]') + len(b'"attackers":[')
    pieces = [_dumps(attackers[i : i + ATTACKER_CHUNK])[1:-1] for i in range(0, len(attackers), ATTACKER_CHUNK)]
    return shell[:at] + b",".join(pieces) + shell[at:]


def kill_frame(seq: int, body: bytes) -> bytes:
    """`{"action":"kill","seq":N,"data":{...}}` spliced around the kill's JSON, without re-encoding it.
    One copy of the body (a join of a view), not three (`body[1:]`, then two `%`): a fleet fight's
    is 9 MB, and each copy holds the GIL for milliseconds."""
    return b"".join((b'{"action":"kill","seq":%d,"data":{"seq":%d,' % (seq, seq), memoryview(body)[1:], b"}"))


def with_seq(seq: int, body: bytes) -> bytes:
    """The kill object with its sequence number as the first field (one copy of the body)."""
    return b"".join((b'{"seq":%d,' % seq, memoryview(body)[1:]))


def body_of(seq: int, frame: bytes) -> bytes:
    """The kill's JSON as kill_frame(seq, body) was given it, back from the frame."""
    head = b'{"action":"kill","seq":%d,"data":{"seq":%d,' % (seq, seq)
    if not frame.startswith(head):
        raise ValueError(f"not the kill frame of seq {seq}")
    return b"{" + frame[len(head) : -1]
