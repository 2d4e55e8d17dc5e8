"""A fleet fight's attackers encoded in pieces (kill/frames.py encode): the bytes of one ujson call."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import ujson

from killboard.kill.frames import ATTACKER_CHUNK, encode


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
