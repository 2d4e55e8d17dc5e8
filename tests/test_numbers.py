"""killboard/numbers.py: integers as clients write them, read without int() ever raising."""

from __future__ import annotations

import pytest

from killboard.numbers import SATURATED, BadNumber, bounded_int, parse_int, query_int


@pytest.mark.parametrize(
    ("raw", "signed", "unsigned"),
    [
        ("0", 0, 0),
        ("42", 42, 42),
        ("+42", 42, None),
        ("-42", -42, None),
        ("0" * 5000 + "7", 7, 7),  # int() counts leading zeros against its 4,300 digits
        ("9" * 30, 10**30 - 1, None),
        ("9" * 5000, SATURATED, None),
        ("-" + "9" * 5000, -SATURATED, None),
        ("", None, None),
        ("-", None, None),
        ("²", None, None),  # isdigit() says yes, int() raises
        ("٣", None, None),  # int() takes it
        ("1_000", None, None),
        (" 1", None, None),
        ("1.0", None, None),
    ],
)
def test_only_ascii_digits_and_never_a_raise(raw: str, signed: int | None, unsigned: int | None) -> None:
    assert parse_int(raw) == signed
    assert bounded_int(raw, 0, 10**29) == unsigned


def test_bounds_are_inclusive() -> None:
    assert [bounded_int(str(n), 9, 15) for n in (8, 9, 15, 16)] == [None, 9, 15, None]


def test_a_query_integer_is_read_in_range_or_refused_by_name() -> None:
    query = {"limit": "20", "empty": "", "big": "9" * 5000, "signed": "+5"}
    assert query_int(query, "limit", 1, 50) == 20
    assert query_int(query, "missing", 1, 50, default=7) == 7
    assert query_int(query, "empty", 1, 50, default=7) == 7
    for name in ("big", "signed"):
        with pytest.raises(BadNumber, match=rf"^{name}: must be an integer from 1 to 2,000, got '"):
            query_int(query, name, 1, 2000)
