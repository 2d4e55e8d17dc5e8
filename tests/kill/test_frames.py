"""kill/frames.py encode: the bytes of one ujson call, for any JSON value, real kills and a fleet fight in pieces."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import ujson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from killboard.kill.codec import source_document
from killboard.kill.enrich import enrich
from killboard.kill.frames import ATTACKER_CHUNK, encode, encode_ascii
from killboard.kill.prices import price_book
from killboard.kill.staticdata import StaticData
from killboard.kill.validate import Submission


def fleet_fight(killmails: list[dict[str, Any]], attackers: int) -> dict[str, Any]:
    """The biggest real kill with `attackers` real attacker entries, cycled."""
    base = copy.deepcopy(max(killmails, key=lambda km: len(km["attackers"])))
    pool = [a for km in killmails for a in km["attackers"] if not a.get("final_blow")]
    base["attackers"] = [base["attackers"][0]] + [pool[i % len(pool)] for i in range(attackers - 1)]
    return base


@pytest.mark.parametrize("attackers", [1, ATTACKER_CHUNK, ATTACKER_CHUNK + 1, 3000])
def test_encode_in_pieces_gives_the_bytes_of_one_call(killmails: list[dict[str, Any]], attackers: int) -> None:
    km = fleet_fight(killmails, attackers)
    km["victim"]["character_name"] = 'a "attackers":[] name ✓ </script>'
    assert encode(km) == ujson.dumps(km, ensure_ascii=False, escape_forward_slashes=False).encode()
    assert encode([km]) == ujson.dumps([km], ensure_ascii=False, escape_forward_slashes=False).encode()


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)  # past 64 bits: orjson refuses, ujson writes them
    | st.floats(allow_nan=False, allow_infinity=False)  # 1e-5 to 1e-4: orjson and ujson differ
    | st.floats(min_value=-1e-4, max_value=1e-4)
    | st.text(),  # any code point: controls, U+2028, `/`, lone surrogates
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=30,
)


def _ujson(value: Any) -> bytes:
    return ujson.dumps(value, ensure_ascii=False, escape_forward_slashes=False).encode()


@settings(max_examples=1000, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(_JSON)
def test_encode_gives_the_bytes_of_ujson_for_any_json_value(value: Any) -> None:
    try:
        expected = _ujson(value)
    except UnicodeEncodeError:  # a lone surrogate: neither encoder can write it as UTF-8
        with pytest.raises(UnicodeEncodeError):
            encode(value)
        return
    assert encode(value) == expected


@settings(max_examples=1000, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(_JSON)
def test_encode_ascii_gives_the_bytes_of_ujson_for_any_json_value(value: Any) -> None:
    assert encode_ascii(value) == ujson.dumps(value, escape_forward_slashes=False).encode()


def test_stored_documents_of_real_kills_are_ujsons(killmails: list[dict[str, Any]]) -> None:
    for km in killmails:
        esi = {k: v for k, v in km.items() if k != "killmail_hash"}
        zkb = {"hash": km["killmail_hash"], "totalValue": 1.5e7, "href": "https://esi.evetech.net/x/", "npc": False}
        kept = {"totalValue": 1.5e7, "npc": False}  # hash and href are the row's columns
        doc = {"esi": {k: v for k, v in esi.items() if k != "killmail_id"}, "zkb": kept, "prices": {"587": 1e-5}}
        assert source_document(esi, zkb, {587: 1e-5}) == ujson.dumps(doc, escape_forward_slashes=False).encode()


def test_encode_of_enriched_real_kills_is_ujsons(killmails: list[dict[str, Any]], static: StaticData) -> None:
    book = price_book(static)
    for km in killmails:
        esi = {k: v for k, v in km.items() if k != "killmail_hash"}
        kill = enrich(Submission(km["killmail_id"], km["killmail_hash"], esi, None), static, {}, book)
        assert encode(kill) == _ujson(kill)
