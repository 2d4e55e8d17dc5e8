"""Stored kill rows to killmail JSON, in a thread: the documents unpacked and decoded, then
enriched with their players' names and encoded (Store's reads, Store._render, drive it)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..kill import codec
from ..kill.validate import Submission

# A stored document larger than this (a kill of some 300 attackers or more; a typical one is
# ~4 KB) is a fleet fight: tens of ms of enrich and encode, left to Store.render_big if set.
BIG_DOCUMENT = 64 * 1024

# (killmail id, hash, source document, names lookup) -> the kill's JSON, or None: render it here.
BigRender = Callable[[int, str, bytes, Callable[[set[int]], Awaitable[dict[int, str]]]], Awaitable[bytes | None]]


@dataclass(frozen=True, slots=True)
class Big:
    """A fleet fight's source document, left for Store.render_big."""

    document: bytes


# A stored row on its way to JSON: the JSON itself, a decoded source document, or a Big.
Decoded = bytes | tuple[Submission, dict[int, float] | None] | Big


def decode_rows(
    rows: Sequence[tuple[Any, ...]],
    unpack: Callable[[int, bytes], bytes],
    defer_big: bool,
    done: Sequence[Decoded] | None = None,
) -> tuple[list[Decoded], set[int]]:
    """Each row's stored document (`unpack`ed), as its JSON (a whole enriched kill, codec 0),
    decoded (Submission, frozen prices), or, with `defer_big`, a fleet fight left as a Big; and
    the player ids the decoded ones name. With `done`, only the rows still a Big there are decoded."""
    out: list[Decoded] = []
    player_ids: set[int] = set()
    for i, row in enumerate(rows):
        if done is not None and not isinstance(done[i], Big):
            out.append(done[i])
            continue
        _, killmail_id, killmail_hash, _, blob, codec_id = row
        document = unpack(codec_id, blob)
        if codec_id == codec.CODEC_ENRICHED_ZLIB:
            out.append(document)
        elif defer_big and len(document) > BIG_DOCUMENT:
            out.append(Big(document))
        else:
            sub, prices = codec.decode(killmail_id, killmail_hash, document)
            player_ids |= codec.player_ids(sub.esi or {})
            out.append((sub, prices))
    return out, player_ids


def render_decoded(decoded: Sequence[Decoded], names: Mapping[int, str], render: codec.Render) -> list[bytes]:
    """The decoded kills enriched with `names` and encoded; the JSON ones as they are."""
    out = []
    for item in decoded:
        if isinstance(item, tuple):
            out.append(render(item[0], names, item[1]))
        else:
            assert isinstance(item, bytes)  # decode_rows decoded every Big left
            out.append(item)
    return out
