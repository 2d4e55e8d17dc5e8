"""The three real fights bundled under tests/data/battles (EVE Ref archives; see each SOURCE.md)."""

from __future__ import annotations

import gzip
import io
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from conftest import AUTH, Client, settle

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


def when(kill: dict[str, Any]) -> float:
    """A killmail's time, in unix seconds."""
    return datetime.fromisoformat(kill["killmail_time"].replace("Z", "+00:00")).timestamp()


async def post_all(client: Client, kills: list[dict[str, Any]]) -> None:
    """POST a fight's kills 50 at a time, then wait until they are stored."""
    for i in range(0, len(kills), 50):
        body = io.BytesIO(json.dumps(kills[i : i + 50]).encode())
        resp = await client.post("/api/killmails", data=body, headers=AUTH)
        assert resp.status in (200, 202), await resp.text()
    await settle(client)


def merging_halves() -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """The 30004049 fight cut in three by time: the first and last parts are two battles (more
    than the detector's gap apart), and the middle part, posted after them, merges them."""
    from killboard.battles.detect import GAP

    kills = sorted(fight("30004049"), key=when)
    t0 = when(kills[0])
    early = [k for k in kills if when(k) - t0 <= 1400]
    late = [k for k in kills if when(k) - t0 >= 1400 + GAP + 60]
    middle = [k for k in kills if k not in early and k not in late]
    return early, middle, late
