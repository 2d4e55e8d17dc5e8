"""Big kills parsed and encoded in pieces (kill/bigjson.py, kill/frames.py encode): the same values
and bytes as one ujson call, the same refusals."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import ujson

from killboard.kill import bigjson
from killboard.kill.frames import ATTACKER_CHUNK, encode


def fleet_fight(killmails: list[dict[str, Any]], attackers: int) -> dict[str, Any]:
    """The biggest real kill with `attackers` real attacker entries, cycled."""
    base = copy.deepcopy(max(killmails, key=lambda km: len(km["attackers"])))
    pool = [a for km in killmails for a in km["attackers"] if not a.get("final_blow")]
    base["attackers"] = [base["attackers"][0]] + [pool[i % len(pool)] for i in range(attackers - 1)]
    return base


@pytest.fixture
def pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bigjson, "PIECES_FROM", 0)  # every document in pieces


@pytest.mark.parametrize("attackers", [1, ATTACKER_CHUNK, ATTACKER_CHUNK + 1, 3000])
def test_encode_in_pieces_gives_the_bytes_of_one_call(killmails: list[dict[str, Any]], attackers: int) -> None:
    km = fleet_fight(killmails, attackers)
    km["victim"]["character_name"] = 'a "attackers":[] name ✓ </script>'
    assert encode(km) == ujson.dumps(km, ensure_ascii=False, escape_forward_slashes=False).encode()
    assert encode([km]) == ujson.dumps([km], ensure_ascii=False, escape_forward_slashes=False).encode()


def test_loads_in_pieces_gives_the_values_of_one_call(killmails: list[dict[str, Any]], pieces: None) -> None:
    km = fleet_fight(killmails, 2000)
    for doc in (km, [km, killmails[0]], killmails, {}, [], {"attackers": []}, 7, "text"):
        for text in (ujson.dumps(doc), ujson.dumps(doc, indent=2) + " \n", encode(doc).decode()):
            assert bigjson.loads(text.encode()) == ujson.loads(text)
            assert bigjson.loads(text) == ujson.loads(text)


@pytest.mark.parametrize(
    "bad",
    [b"[1,2", b'{"a":1,}', b'{"a" 1}', b'{"a":1} x', b"\xff\xfe", b"", b"[1 2]", b"{1:2}"],
)
def test_loads_in_pieces_refuses_what_ujson_refuses(bad: bytes, pieces: None) -> None:
    with pytest.raises(ValueError):
        ujson.loads(bad)
    with pytest.raises(ValueError):
        bigjson.loads(bad)
