"""A kill's bytes on the wire: its JSON encoded once, and the kill frame spliced around it."""

from __future__ import annotations

import ujson

# Attackers encoded per call at most: ujson holds the GIL for a whole call, so a 10,000-attacker
# kill (9 MB enriched) encoded in one call stalled the event loop ~120 ms even from a thread;
# 250 attackers are ~3 ms, and the loop can take the GIL back between calls.
ATTACKER_CHUNK = 250


def _dumps(message: object) -> str:
    return ujson.dumps(message, ensure_ascii=False, escape_forward_slashes=False)


def encode(message: object) -> bytes:
    """The message's JSON, byte for byte what one ujson call gives; a kill with many attackers
    is encoded in pieces (see ATTACKER_CHUNK) and spliced."""
    if not isinstance(message, dict):
        return _dumps(message).encode()
    attackers = message.get("attackers")
    if not isinstance(attackers, list) or len(attackers) <= ATTACKER_CHUNK:
        return _dumps(message).encode()
    # The kill without its attackers, then the attackers in pieces where the empty list was.
    # `"attackers":[]` cannot occur inside a JSON string (its quotes would be escaped), and a
    # kill has no other field of that name, so the first occurrence is the top-level key.
    shell = _dumps({**message, "attackers": []})
    at = shell.index('"attackers":[]') + len('"attackers":[')
    pieces = [_dumps(attackers[i : i + ATTACKER_CHUNK])[1:-1] for i in range(0, len(attackers), ATTACKER_CHUNK)]
    return (shell[:at] + ",".join(pieces) + shell[at:]).encode()


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
