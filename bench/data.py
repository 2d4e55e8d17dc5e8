"""Real killmails from tests/data, renumbered into as many distinct kills as a benchmark needs,
and a fleet-fight kill of ~1 MiB built from the real attacker entries."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

from killboard.config import PROJECT_ROOT

KILLMAILS = PROJECT_ROOT / "tests" / "data" / "killmails"
# Renumbered ids stay far above real ones (and below 2**63): id + n * STRIDE.
STRIDE = 10**10


def real_killmails() -> list[dict[str, Any]]:
    files = sorted(KILLMAILS.glob("[0-9]*.json"), key=lambda p: int(p.stem))
    return [json.loads(p.read_text()) for p in files]


def stream(killmails: list[dict[str, Any]], start: int = 1) -> Iterator[dict[str, Any]]:
    """The real kills over and over, each copy under fresh ids (round n adds n * STRIDE)."""
    n = start
    while True:
        for km in killmails:
            yield {**km, "killmail_id": km["killmail_id"] + n * STRIDE}
        n += 1


def take(it: Iterator[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    return [next(it) for _ in range(count)]


def fleet_fight(killmails: list[dict[str, Any]], attackers: int) -> dict[str, Any]:
    """The biggest real kill with `attackers` attackers, cycled from every real attacker entry
    (one final blow), e.g. a 3,000-pilot fight."""
    base = copy.deepcopy(max(killmails, key=lambda km: len(json.dumps(km))))
    pool = [a for km in killmails for a in km["attackers"]]
    chosen = [dict(pool[i % len(pool)], final_blow=False) for i in range(attackers)]
    chosen[0]["final_blow"] = True
    base["attackers"] = chosen
    return base


def enriched_size(km: dict[str, Any]) -> int:
    """Bytes of the kill frame the server will broadcast for this killmail."""
    from killboard.kill.enrich import enrich
    from killboard.kill.frames import encode
    from killboard.kill.prices import price_book
    from killboard.kill.staticdata import load_static
    from killboard.kill.validate import parse_submission

    static = load_static(PROJECT_ROOT / "data")
    return len(encode(enrich(parse_submission(km), static, {}, price_book(static))))


def fleet_fight_of_size(killmails: list[dict[str, Any]], target: int = 1 << 20) -> tuple[dict[str, Any], int]:
    """A fleet fight whose broadcast frame is about `target` bytes; (killmail, frame size)."""
    probe = 500
    size = enriched_size(fleet_fight(killmails, probe))
    count = max(1, round(probe * target / size))
    km = fleet_fight(killmails, count)
    return km, enriched_size(km)
