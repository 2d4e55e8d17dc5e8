"""What each victim's items came to (`summary.Lost`), worked out from the stored row itself.

A battle's detail view needs four sums a kill. Rendering the kill to get them (enrich in eight
languages, encode ~28 KB, parse it back: ~0.5 ms a kill, ~120 ms for a battle of 244 kills)
threw away all but the items' quantities and unit values. A source document keeps the unit
prices the kill was valued with (codec.source_document), so the sums come from the document
with the enricher's own rule (`PriceBook.unit_price` over those prices alone) in ~0.05 ms.
A document from before prices were kept is valued with today's prices: those are left to the
full render (`unpriced`), as is anything this module does not know how to read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import ujson

from ..kill import codec
from ..kill.prices import PriceBook
from .summary import Lost, lost

# (codec id, stored blob) -> the stored document (Store.unpack)
Unpack = Callable[[int, bytes], bytes]


def lost_of_rows(rows: Sequence[tuple[int, int, bytes]], unpack: Unpack) -> tuple[dict[int, Lost], list[int]]:
    """(killmail id, codec id, blob) rows -> (killmail id -> Lost, ids to value by a full render).
    CPU work: call it in a thread."""
    out: dict[int, Lost] = {}
    unpriced: list[int] = []
    for killmail_id, codec_id, blob in rows:
        found = _lost_of_document(codec_id, unpack(codec_id, bytes(blob)))
        if found is None:
            unpriced.append(killmail_id)
        else:
            out[killmail_id] = found
    return out, unpriced


def lost_of_bodies(bodies: Iterable[bytes]) -> dict[int, Lost]:
    """Rendered kills' JSON -> killmail id -> Lost (the victim's enriched items)."""
    out = {}
    for body in bodies:
        kill = ujson.loads(body)
        out[kill["killmail_id"]] = lost(_flat(kill.get("items") or []))
    return out


def _lost_of_document(codec_id: int, document: bytes) -> Lost | None:
    doc = ujson.loads(document)
    if codec_id == codec.CODEC_ENRICHED_ZLIB:  # a whole enriched kill (schema 1)
        return lost(_flat(doc.get("items") or []))
    if codec_id != codec.CODEC_SOURCE_ZDICT or not isinstance(doc, dict):
        return None
    victim_items = ((doc.get("esi") or {}).get("victim") or {}).get("items", [])
    if doc.get("prices") is None:
        # No prices kept: an empty pod (nothing priced, so nothing kept) sums to nothing at any
        # price; anything else is valued with today's prices, by the render.
        return lost(()) if not victim_items else None
    # As codec.decode and codec.renderer read them: the kill valued with its frozen prices alone.
    book = PriceBook(market={int(type_id): price for type_id, price in doc["prices"].items()}, fixed={})
    return lost(_valued(victim_items, book))


def _valued(items: list[Mapping[str, Any]], book: PriceBook) -> Iterator[dict[str, Any]]:
    """The enricher's items (enrich._Enricher.items) reduced to what `lost` reads, in `_flat`'s
    order (an item, then what it holds): the same floats added in the same order."""
    for item in items:
        yield {
            "value": book.unit_price(item["item_type_id"], item.get("singleton", 0)),
            "qty_dropped": item.get("quantity_dropped", 0) or 0,
            "qty_destroyed": item.get("quantity_destroyed", 0) or 0,
        }
        if item.get("items"):
            yield from _valued(item["items"], book)


def _flat(items: list[Any]) -> list[Any]:
    out = []
    for item in items:
        out.append(item)
        if item.get("items"):
            out += _flat(item["items"])
    return out
