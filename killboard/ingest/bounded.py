"""Reading other people's HTTP answers (zKillboard's feed, ESI) with a bound on their size."""

from __future__ import annotations

import aiohttp

CHUNK = 64 * 1024


async def read_bounded(resp: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The whole body, or None once it would pass `limit` bytes (nothing more is read then).
    The bound is on what comes out of the gzip: a small compressed answer that inflates to
    gigabytes stops at the bound too."""
    if resp.content_length is not None and resp.content_length > limit and not resp.headers.get("Content-Encoding"):
        return None
    parts: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(CHUNK):
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
    return b"".join(parts)
