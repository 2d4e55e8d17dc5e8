"""The compact stored form of a kill: its source document (ESI body + zkb block), deflated with a
preset dictionary, and the way back to a Submission that enrich turns into the full killmail.

Why not the enriched JSON: it carries every type, group and region name in eight languages
(~29 KB a kill, ~5.5 KB deflated), all of it recomputable from the static data. The source
document is ~4 KB and deflates to ~0.5 KB against a dictionary of typical killmails (figures in
docs/storage.md, measured by bench/storage.py).
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import ujson

from ..config import resource_dir
from ..kill.frames import encode, encode_ascii
from .enrich import enrich
from .prices import SINGLETON_BLUEPRINT_COPY, PriceBook, price_book
from .staticdata import StaticData, load_static
from .validate import Submission

# zlib-ng: the same raw deflate at ~0.7x the CPU of stdlib zlib here, which stays the fallback.
_deflate: ModuleType
try:
    from zlib_ng import zlib_ng as _deflate
except ImportError:
    _deflate = zlib

# Codec ids stored per row, so rows written by older versions stay readable.
CODEC_ENRICHED_ZLIB = 0  # schema 1: zlib of the enriched JSON, returned as it is
CODEC_SOURCE_ZDICT = 1  # raw deflate of the source document with dictionary `dictionary_id`

DICTIONARY_ID = 1
DICTIONARY_PATH = Path(__file__).with_name("killmail.zdict")
# zlib's window is 32 KiB: a longer preset dictionary would be ignored except for its tail.
DICTIONARY_SIZE = 32 * 1024

# Fields the row's columns already hold (or that are derived from them): not stored twice.
_ESI_DROPPED = ("killmail_id", "killmail_hash")
_ZKB_DROPPED = ("hash", "href")


def source_document(
    esi: dict[str, Any], zkb: dict[str, Any] | None, prices: Mapping[int, float] | None = None
) -> bytes:
    """The JSON we keep for a kill: everything enrich reads, nothing the columns already hold.

    `prices` are the unit prices the kill was valued with (kill_prices): market prices are
    refreshed daily, and a kill read back next month must show the values it was broadcast with.
    """
    doc: dict[str, Any] = {"esi": {k: v for k, v in esi.items() if k not in _ESI_DROPPED}}
    if zkb:
        doc["zkb"] = {k: v for k, v in zkb.items() if k not in _ZKB_DROPPED}
    if prices:
        doc["prices"] = {str(type_id): price for type_id, price in prices.items()}
    # ensure_ascii (the default): fields nobody validates (unknown ESI keys, zkb) may hold a lone
    # UTF-16 surrogate ("\\ud800" is valid JSON); UTF-8 cannot encode one, and the kill, already
    # acknowledged, was dropped. Escaped, it round-trips; ESI bodies are ASCII, so no size cost.
    return encode_ascii(doc)  # ujson's bytes (escape_forward_slashes=False), faster


def kill_prices(kill: Mapping[str, Any]) -> dict[int, float]:
    """Unit prices (non-zero) an enriched kill was valued with: the hull and every item type.

    Blueprint copies are left out: they are valued by rule (0.01 ISK), not by price.
    """
    out: dict[int, float] = {}
    ship_id = (kill.get("victim") or {}).get("ship_id")
    if ship_id and kill.get("ship_value"):
        out[ship_id] = kill["ship_value"]
    stack = list(kill.get("items") or ())
    while stack:
        item = stack.pop()
        if item.get("value") and item.get("singleton") != SINGLETON_BLUEPRINT_COPY:
            out[item["type_id"]] = item["value"]
        stack.extend(item.get("items") or ())
    return out


def pack(document: bytes, dictionary: bytes) -> bytes:
    """Raw deflate of a source document against the dictionary: any inflate (stdlib zlib, older
    versions of this code) with the same dictionary reads it back, whichever library packed it."""
    c = _compressor(dictionary).copy()
    return c.compress(document) + c.flush()


# zlib-ng 7 against stdlib zlib 6 on held-out real documents (bench/compress.py): 0.72x the CPU
# and 0.95x the bytes (zlib-ng's 6: 0.68x and 0.98x; its 9 is larger than its 7).
PACK_LEVEL = 7 if _deflate is not zlib else 6


@functools.lru_cache(maxsize=4)
def _compressor(dictionary: bytes) -> Any:
    """A compressor primed with the dictionary, copied for each kill: priming hashes all 32 KB
    of it, ~20 us a kill. zlib-ng when installed (PACK_LEVEL). With stdlib zlib, level 6, not 9:
    68 us instead of 172 us a kill (the largest part of an import's CPU) for 6% more bytes.
    Raw deflate (wbits -15): no zlib header or checksum, 6 bytes a row saved; SQLite pages carry
    their own integrity checks."""
    return _deflate.compressobj(PACK_LEVEL, _deflate.DEFLATED, -15, 8, _deflate.Z_DEFAULT_STRATEGY, dictionary)


def unpack(blob: bytes, dictionary: bytes) -> bytes:
    d = zlib.decompressobj(-15, dictionary)
    return d.decompress(blob) + d.flush()


def unpack_row(codec_id: int, blob: bytes, dictionary: bytes) -> bytes:
    """The stored document of a kills row: enriched JSON (codec 0) or the source document
    (codec 1, deflated with the dictionary of id DICTIONARY_ID)."""
    if codec_id == CODEC_ENRICHED_ZLIB:
        return zlib.decompress(blob)
    if codec_id == CODEC_SOURCE_ZDICT:
        return unpack(blob, dictionary)
    raise ValueError(f"unknown codec {codec_id}")


def decode(killmail_id: int, killmail_hash: str, document: bytes) -> tuple[Submission, dict[int, float] | None]:
    """Undo source_document: the Submission that enrich takes, and the frozen unit prices."""
    doc = ujson.loads(document)
    esi = doc["esi"]
    esi["killmail_id"] = killmail_id
    zkb = doc.get("zkb")
    if zkb is not None:
        zkb["hash"] = killmail_hash
    prices = doc.get("prices")
    frozen = {int(type_id): price for type_id, price in prices.items()} if prices is not None else None
    return Submission(killmail_id, killmail_hash, esi, zkb), frozen


def player_ids(esi: dict[str, Any]) -> set[int]:
    """Character, corporation and alliance ids whose names only ESI knows."""
    out: set[int] = set()
    for party in (esi.get("victim") or {}, *(esi.get("attackers") or ())):
        for key in ("character_id", "corporation_id", "alliance_id"):
            value = party.get(key)
            if value:
                out.add(value)
    return out


Render = Callable[[Submission, Mapping[int, str], Mapping[int, float] | None], bytes]


def renderer(static: StaticData, prices: PriceBook) -> Render:
    """Source document -> full killmail JSON, exactly as the worker encoded it for broadcast.

    With frozen prices, the kill is valued with those alone (a type not among them had no price
    then, so it has none now); without (a document from before prices were kept), with `prices`.
    """

    def render(sub: Submission, names: Mapping[int, str], frozen: Mapping[int, float] | None) -> bytes:
        book = prices if frozen is None else PriceBook(market=dict(frozen), fixed={})
        return encode(enrich(sub, static, names, book))

    return render


@functools.cache
def default_renderer() -> Render:
    """For a Store opened without one (tools, tests): the bundled static data and prices."""
    static = load_static(resource_dir("data"))
    return renderer(static, price_book(static))


def build_dictionary(documents: list[bytes], size: int = DICTIONARY_SIZE) -> bytes:
    """A preset dictionary from sample documents: the samples themselves, largest last.

    Measured against smarter choices (the most frequent JSON segments across samples) on held-out
    killmails, whole samples compressed best: a kill shares long runs with other kills (key
    sequences, common modules and their flags), and deflate finds them at any offset.
    """
    ordered: list[bytes] = sorted(documents, key=len)
    return b"".join(ordered)[-size:]


def load_dictionary(path: Path = DICTIONARY_PATH) -> bytes:
    return path.read_bytes()
