"""What a name search costs with 100,000 player names known besides the static data's.

    python bench/search.py                  # 100,000 names, 2,000 queries
    python bench/search.py --names 10000    # quicker

Builds the real search index (killboard/entities/search.py) from the bundled static data and
`--names` synthetic player names (syllables, as EVE names look), then times queries of one to
full-name length, by this process's CPU time: the search and the JSON answer, as a request pays.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from killboard.entities import search  # noqa: E402
from killboard.kill.frames import encode  # noqa: E402
from killboard.kill.staticdata import load_static  # noqa: E402

SYLLABLES = [
    "ka",
    "ri",
    "to",
    "mo",
    "na",
    "shi",
    "ve",
    "la",
    "dor",
    "an",
    "el",
    "ix",
    "qua",
    "zer",
    "thu",
    "bo",
    "li",
    "sen",
    "ga",
    "rhu",
]
KINDS = ("character", "corporation", "alliance")


def fake_names(count: int, rng: random.Random) -> list[tuple[str, int, str]]:
    out = []
    for n in range(count):
        words = [
            "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))).capitalize()
            for _ in range(rng.randint(1, 3))
        ]
        out.append((KINDS[n % 7 % 3], 2_100_000_000 + n, " ".join(words)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--names", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=2_000)
    args = ap.parse_args()
    rng = random.Random(20)
    static = load_static(ROOT / "data")
    index = search.SearchIndex()
    t = time.process_time()
    index.load(search.static_entries(static))
    players = fake_names(args.names, rng)
    index.load(search.Entry(name.casefold(), search.KIND_RANK[kind], i, kind, name, "") for kind, i, name in players)
    built = time.process_time() - t
    print(f"index: {len(index)} names ({args.names} players + static data), built in {built * 1000:.0f} ms CPU")
    t = time.process_time()
    for kind, i, name in players[:1000]:
        index.add_player(kind, i, name + " II")
    print(f"a name arriving (insort): {(time.process_time() - t) * 1e6 / 1000:.0f} us CPU each")
    for length in (1, 2, 3, 5, 0):
        queries = []
        for _ in range(args.queries):
            name = rng.choice(players)[2]
            queries.append(name if length == 0 else name[:length])
        times = []
        for q in queries:
            start = time.process_time()
            found = index.search(q, "en", 10)
            encode({"q": q, "results": [{"kind": e.kind, "id": e.id, "name": e.name} for e in found]})
            times.append(time.process_time() - start)
        times.sort()
        label = "full name" if length == 0 else f"{length} letter{'s' if length > 1 else ''}"
        print(
            f"query of {label:9}: median {statistics.median(times) * 1e3:.3f} ms,"
            f" p99 {times[int(len(times) * 0.99)] * 1e3:.3f} ms CPU"
        )


if __name__ == "__main__":
    main()
