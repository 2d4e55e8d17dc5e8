"""The page's static files (static/: scripts, style, icon), read once at start and answered from
memory: no thread hop and no open file per request, an ETag and 304, gzipped once.

aiohttp's `add_static` opens each file in its executor for every request; a request cut off while
the server stops could leave that file open (seen as a ResourceWarning in the browser tests), and
each view of a page cost its assets a thread hop each."""

from __future__ import annotations

import hashlib
import mimetypes
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import hdrs, web
from aiohttp.web_response import ContentCoding

from .httpzip import MIN_BYTES, choose, gzip_body

# The folder holds a few small files (~60 KB in all); anything this big is not an asset of ours.
MAX_ASSET = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    gzipped: bytes | None  # None: too small to be worth it, or an image that is compressed already
    content_type: str  # the header's value, with its charset for text
    etag: str


def load(folder: Path) -> dict[str, Asset]:
    """Every file directly in `folder`, by name."""
    assets: dict[str, Asset] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        body = path.read_bytes()
        if len(body) > MAX_ASSET:
            raise ValueError(f"{path}: {len(body):,} bytes is not a page asset (at most {MAX_ASSET:,})")
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        text = content_type.startswith("text/") or content_type in ("application/javascript", "image/svg+xml")
        gzipped = gzip_body(body, 9) if text and len(body) >= MIN_BYTES else None
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        assets[path.name] = Asset(body, gzipped, content_type + ("; charset=utf-8" if text else ""), etag)
    return assets


def handler(assets: dict[str, Asset]) -> Callable[[web.Request], Awaitable[web.Response]]:
    """GET /static/{name}: the kept file, 304 when the browser has it, gzipped when accepted.
    Browsers revalidate each time (no-cache): the names carry no version, so a long max-age
    would keep an old script after an upgrade."""

    async def serve(request: web.Request) -> web.Response:
        asset = assets.get(request.match_info["name"])
        if asset is None:
            raise web.HTTPNotFound(text='{"error": "no such file"}', content_type="application/json")
        headers = {hdrs.ETAG: asset.etag, hdrs.CACHE_CONTROL: "no-cache", hdrs.VARY: "Accept-Encoding"}
        if asset.etag in request.headers.get(hdrs.IF_NONE_MATCH, ""):
            return web.Response(status=304, headers=headers)
        body = asset.body
        if asset.gzipped is not None and choose(request.headers.get(hdrs.ACCEPT_ENCODING, "")) is ContentCoding.gzip:
            headers[hdrs.CONTENT_ENCODING] = "gzip"
            body = asset.gzipped
        return web.Response(body=body, headers={**headers, hdrs.CONTENT_TYPE: asset.content_type})

    return serve
