"""Write killboard/killmail.zdict, the preset deflate dictionary for stored kills, from the bundled
real killmails (tests/data/killmails). Run it again only together with a new DICTIONARY_ID in
killboard/kill/codec.py: rows keep the id of the dictionary they were packed with.

    python bench/zdict.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from killboard.kill.codec import DICTIONARY_PATH, build_dictionary, kill_prices, source_document  # noqa: E402
from killboard.kill.enrich import enrich  # noqa: E402
from killboard.kill.prices import price_book  # noqa: E402
from killboard.kill.staticdata import load_static  # noqa: E402
from killboard.kill.validate import parse_submission  # noqa: E402


def sample_documents() -> list[bytes]:
    """The bundled kills as they are stored: source document plus the unit prices they were valued with."""
    static = load_static(ROOT / "data")
    prices = price_book(static)
    files = sorted((ROOT / "tests" / "data" / "killmails").glob("[0-9]*.json"), key=lambda p: int(p.stem))
    subs = [parse_submission(json.loads(p.read_text())) for p in files]
    return [
        source_document(s.esi, s.zkb, kill_prices(enrich(s, static, {}, prices))) for s in subs if s.esi is not None
    ]


if __name__ == "__main__":
    dictionary = build_dictionary(sample_documents())
    DICTIONARY_PATH.write_bytes(dictionary)
    print(f"wrote {DICTIONARY_PATH} ({len(dictionary)} bytes)")
