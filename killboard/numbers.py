"""Integers as clients write them (URL paths and queries, channel names, header parameters).

`int()` alone is the wrong parser for them: it takes other scripts' digits ("٣"), "1_000",
spaces and signs, `str.isdigit` passes "²" (and then `int` raises), and `int` raises on strings
past 4,300 digits. Both functions here look at the characters first, so no input makes them raise.
"""

from __future__ import annotations

from collections.abc import Mapping

# Past 30 digits a value is out of every range the server reads; parse_int saturates there.
SATURATED = 10**30
# The largest id any client may name (kill, entity, battle, seq): SQLite's largest integer, so a
# bigger one is a 400 rather than an OverflowError in a query.
MAX_ID = 2**63 - 1


def parse_int(raw: str) -> int | None:
    """A decimal integer, with an optional sign, or None. Values past 30 digits come back as
    ±10**30, out of every range here, so the caller's range check words the error."""
    digits = raw[1:] if raw[:1] in ("-", "+") else raw
    if not digits.isascii() or not digits.isdigit():
        return None
    significant = digits.lstrip("0") or "0"  # int() counts leading zeros against its limit too
    if len(significant) > 30:
        return -SATURATED if raw[0] == "-" else SATURATED
    return -int(significant) if raw[0] == "-" else int(significant)


def bounded_int(raw: str, low: int, high: int) -> int | None:
    """Unsigned ASCII digits whose value is from `low` to `high`, or None."""
    value = parse_int(raw) if raw[:1] not in ("-", "+") else None
    return value if value is not None and low <= value <= high else None


class BadNumber(ValueError):
    """A query's integer that is none or out of its range; the message names the parameter."""


def query_int(query: Mapping[str, str], name: str, low: int, high: int, default: int | None = None) -> int | None:
    """The query's `name` as an integer from `low` to `high`, `default` when absent or empty.
    Raises BadNumber, worded alike on every page and API: `limit: must be an integer from 1 to
    500, got 'abc'`."""
    raw = query.get(name)
    if not raw:
        return default
    value = bounded_int(raw, low, high)
    if value is None:
        raise BadNumber(f"{name}: must be an integer from {low:,} to {high:,}, got {raw[:40]!r}")
    return value
