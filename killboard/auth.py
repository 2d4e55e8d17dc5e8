"""Bearer tokens: does an Authorization header carry the configured token."""

from __future__ import annotations

import hmac


def bearer_matches(header: str, token: str) -> bool:
    """True when `header` is `Bearer <token>`, compared in constant time.

    aiohttp keeps header bytes that are not UTF-8 as lone surrogates; encoding them back with
    surrogateescape gives the bytes sent, so such a header is a wrong token (401), not a crash.
    """
    scheme, _, value = header.partition(" ")
    given = value.strip().encode("utf-8", "surrogateescape")
    return scheme.lower() == "bearer" and hmac.compare_digest(given, token.encode())
