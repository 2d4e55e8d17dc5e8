"""Many stored kills made from the 82 real ones (new ids and kill times), for storage-level tests."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from killboard.ingest.pipeline import build_kill
from killboard.kill.enrich import enrich
from killboard.kill.prices import price_book
from killboard.kill.staticdata import StaticData
from killboard.kill.validate import Submission, parse_submission
from killboard.storage.rows import NewKill
from killboard.storage.store import Store


def make_kills(
    static: StaticData, killmails: list[dict[str, Any]], count: int, first_id: int, kill_time: int
) -> list[NewKill]:
    """`count` kills with ids from `first_id`, all at `kill_time`, in the compact stored form."""
    prices = price_book(static)
    subs = [parse_submission(k) for k in killmails]
    enriched = [enrich(s, static, {}, prices) for s in subs]
    out = []
    for n in range(count):
        sub, kill = subs[n % len(subs)], enriched[n % len(subs)]
        new = build_kill(Submission(first_id + n, sub.killmail_hash, sub.esi, sub.zkb), kill)
        # The body (only broadcast, never stored in this form) is left out to keep tests light.
        out.append(
            NewKill(
                new.killmail_id,
                new.killmail_hash,
                kill_time,
                new.system_id,
                0.0,
                b"",
                new.source,
                participation=new.participation,
            )
        )
    return out


async def save_all(store: Store, kills: list[NewKill], batch: int = 200) -> None:
    for i in range(0, len(kills), batch):
        await store.save_kills(kills[i : i + batch])


async def filled(path: Path, static: StaticData, killmails: list[dict[str, Any]], count: int) -> None:
    """A database at `path` holding `count` kills stored now, checkpointed (ready for a server)."""
    store = await Store.open(path)
    try:
        await save_all(store, make_kills(static, killmails, count, 300_000_000, int(time.time())))
        await store.checkpoint()
    finally:
        await store.close()


def as_schema_5(path: Path) -> None:
    """Take a database back to schema 5, as the release before the participant index, battles and
    entity figures wrote it: their tables go, the kills stay."""
    db = sqlite3.connect(path)
    db.executescript(
        "DROP TABLE participants; DROP TABLE entity_kills; DROP TABLE battles; DROP TABLE battle_kills;"
        " DROP TABLE entity_months; DROP TABLE entity_tops; PRAGMA user_version = 5;"
    )
    db.close()
