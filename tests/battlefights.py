"""The three real fights bundled under tests/data/battles (EVE Ref archives; see each SOURCE.md)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

DATA = Path(__file__).parent / "data" / "battles"
FIGHTS = {
    "30001155": "everef-2021-11-27-sys30001155",
    "30002472": "everef-2021-11-27-sys30002472",
    "30004049": "everef-2021-11-28-sys30004049",
}


def fight(system: str) -> list[dict[str, Any]]:
    """Every killmail of one fight, oldest id first (ESI JSON, no zkb block)."""
    with gzip.open(DATA / FIGHTS[system] / "killmails.json.gz", "rt") as f:
        kills = json.load(f)
    return sorted(kills, key=lambda k: k["killmail_id"])
