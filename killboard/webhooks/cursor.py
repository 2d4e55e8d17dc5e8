"""Each webhook's cursor (the last seq it delivered) in SQLite, so a restart or a crash resumes there."""

from __future__ import annotations

import time

from ..storage.store import Store


async def load(store: Store, name: str) -> int:
    """The webhook's cursor; a webhook new to this database starts at the newest stored kill
    (it does not post the history), recorded in the same transaction so a crash cannot move it."""
    async with store.transaction() as db:
        await db.execute(
            # `WHERE true`: SQLite cannot otherwise tell an upsert's ON from a join's after a SELECT.
            "INSERT INTO webhook_cursors (name, seq, updated_at)"
            " SELECT ?, coalesce(max(seq), 0), ? FROM kills WHERE true ON CONFLICT (name) DO NOTHING",
            (name, time.time()),
        )
        async with db.execute("SELECT seq FROM webhook_cursors WHERE name = ?", (name,)) as cur:
            row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def save(store: Store, name: str, seq: int) -> None:
    """Move the cursor after a delivery; it only moves forward."""
    async with store.transaction() as db:
        await db.execute(
            "UPDATE webhook_cursors SET seq = ?, updated_at = ? WHERE name = ? AND seq < ?",
            (seq, time.time(), name, seq),
        )
