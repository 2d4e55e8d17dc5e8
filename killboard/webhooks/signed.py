"""The json format: the WebSocket's kill frame as the body, signed with HMAC-SHA256 when a secret is set."""

from __future__ import annotations

import hashlib
import hmac

from ..kill.frames import kill_frame

SIGNATURE_HEADER = "X-Killboard-Signature"
DELIVERY_HEADER = "X-Killboard-Delivery"


def body(seq: int, kill_json: bytes) -> bytes:
    """`{"action":"kill","seq":N,"data":{...}}`: byte for byte what a WebSocket subscriber receives."""
    return kill_frame(seq, kill_json)


def signature(secret: str, payload: bytes) -> str:
    """`sha256=<hex>` of the exact bytes posted; receivers compare it with hmac.compare_digest."""
    return "sha256=" + hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()


def verify(secret: str, payload: bytes, header: str | None) -> bool:
    """What a receiver does (and the tests' fake receiver): constant-time compare of the header."""
    return header is not None and hmac.compare_digest(signature(secret, payload), header)


def headers(name: str, seq: int, payload: bytes, secret: str | None) -> dict[str, str]:
    """Content type, the delivery id (the same on every retry of one kill, so a receiver can drop a
    repeat) and the signature."""
    out = {"Content-Type": "application/json", DELIVERY_HEADER: f"{name}:{seq}"}
    if secret:
        out[SIGNATURE_HEADER] = signature(secret, payload)
    return out
