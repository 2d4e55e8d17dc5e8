"""JSON parsed in pieces when it is big, so no single C call holds the GIL for long.

ujson parses a 10,000-attacker kill (1.75 MB) in one call of ~33 ms, holding the GIL: from a
thread too, the event loop waits that long. Here a big document's top level (a kill, or an array
of kills) and the elements of its lists (a kill's attackers) are each parsed by a call of their
own (the standard library's C scanner, `raw_decode`), and the GIL can change hands between them.
Small documents take ujson's one call, as before.
"""

from __future__ import annotations

import json
import re
from typing import Any

import ujson

# Below this one ujson call is short enough (~1 ms per 64 KiB).
PIECES_FROM = 256 * 1024

_SPACE = re.compile(r"[ \t\n\r]*")


_decoder = json.JSONDecoder()  # NaN and Infinity pass, as with ujson: validation refuses them


def loads(data: bytes | str) -> Any:
    """The JSON value in `data`, as ujson.loads gives it; ValueError when it is not JSON."""
    if len(data) < PIECES_FROM:
        return ujson.loads(data)
    text = data.decode() if isinstance(data, bytes) else data
    at = _skip(text, 0)
    first = text[at : at + 1]
    if first == "[":
        value, end = _array(text, at + 1, kills=True)
    elif first == "{":
        value, end = _object(text, at + 1)
    else:
        value, end = _raw(text, at)
    if _skip(text, end) != len(text):
        raise ValueError(f"extra data after the JSON value at {end}")
    return value


def _skip(text: str, at: int) -> int:
    match = _SPACE.match(text, at)
    return match.end() if match else at


def _raw(text: str, at: int) -> tuple[Any, int]:
    try:
        return _decoder.raw_decode(text, at)
    except json.JSONDecodeError as exc:
        raise ValueError(str(exc)) from None


def _array(text: str, at: int, kills: bool) -> tuple[list[Any], int]:
    """A list, one call per element; a top-level list's objects (kills) are walked in turn."""
    out: list[Any] = []
    at = _skip(text, at)
    if text[at : at + 1] == "]":
        return out, at + 1
    while True:
        if kills and text[at : at + 1] == "{":
            item, at = _object(text, at + 1)
        else:
            item, at = _raw(text, at)
        out.append(item)
        at = _skip(text, at)
        sep = text[at : at + 1]
        if sep == "]":
            return out, at + 1
        if sep != ",":
            raise ValueError(f"expected ',' or ']' at {at}")
        at = _skip(text, at + 1)


def _object(text: str, at: int) -> tuple[dict[str, Any], int]:
    """A kill: its lists (attackers, items) one element per call, its other values whole."""
    out: dict[str, Any] = {}
    at = _skip(text, at)
    if text[at : at + 1] == "}":
        return out, at + 1
    while True:
        if text[at : at + 1] != '"':
            raise ValueError(f"expected a key at {at}")
        key, at = _raw(text, at)
        at = _skip(text, at)
        if text[at : at + 1] != ":":
            raise ValueError(f"expected ':' at {at}")
        at = _skip(text, at + 1)
        if text[at : at + 1] == "[":
            out[key], at = _array(text, at + 1, kills=False)
        else:
            out[key], at = _raw(text, at)
        at = _skip(text, at)
        sep = text[at : at + 1]
        if sep == "}":
            return out, at + 1
        if sep != ",":
            raise ValueError(f"expected ',' or '}}' at {at}")
        at = _skip(text, at + 1)
