"""How much matching one kill costs with many sockets and channels (topics.Index).

Run: .venv/bin/python bench/match.py [sockets] [channels-per-socket]
Builds sockets with channels drawn from the ids, places and topics of the 82 real test kills
(so many of them match), then times Index.match over those kills.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from killboard.config import PROJECT_ROOT  # noqa: E402
from killboard.kill.enrich import enrich  # noqa: E402
from killboard.kill.prices import price_book  # noqa: E402
from killboard.kill.staticdata import load_static  # noqa: E402
from killboard.kill.topics import TOPICS, Index, kill_facts, parse  # noqa: E402
from killboard.kill.validate import parse_submission  # noqa: E402


def main() -> None:
    sockets = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    per_socket = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    static = load_static(PROJECT_ROOT / "data")
    prices = price_book(static)
    files = sorted((ROOT / "tests" / "data" / "killmails").glob("[0-9]*.json"))
    kills = [enrich(parse_submission(json.loads(p.read_text())), static, {}, prices) for p in files]
    started = time.perf_counter()
    facts = [kill_facts(k) for k in kills]
    facts_us = (time.perf_counter() - started) / len(kills) * 1e6
    pool: list[str] = sorted(TOPICS)
    for k in kills:
        pool += [f"system:{k['system_id']}", f"region.{k['region_id']}", f"victim.{k['victim']['corporation_id']}"]
        pool += [f"attacker.{a['corporation_id']}" for a in k["attackers"][:3] if a.get("corporation_id")]
        pool.append(f"alliance:{k['victim'].get('alliance_id') or 1}&solo")
    rng = random.Random(4)
    index: Index[int] = Index()
    for socket in range(sockets):
        for channel in rng.sample(pool, per_socket):
            index.add(parse(channel), socket)
    rounds = 20
    started = time.perf_counter()
    delivered = 0
    for _ in range(rounds):
        for f in facts:
            delivered += len(index.match(f))
    per_kill = (time.perf_counter() - started) / (rounds * len(facts))
    print(
        f"{sockets} sockets x {per_socket} channels ({len(set(pool))} distinct): "
        f"kill_facts {facts_us:.0f} us/kill; match {per_kill * 1e3:.2f} ms/kill, "
        f"{delivered / (rounds * len(facts)):.0f} matching sockets per kill on average"
    )


if __name__ == "__main__":
    main()
