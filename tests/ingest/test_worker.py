"""The worker overlaps enriching one batch with writing the one before: it must still store
every kill once, in queue order, and report idle only when the last batch is written."""

from __future__ import annotations

import json
from typing import Any

from conftest import AUTH, settle

from killboard.web.keys import store_key


async def test_idle_means_every_batch_is_written_and_seq_follows_the_queue(
    make_client: Any, killmails: list[dict[str, Any]]
) -> None:
    # Batches of 3: many hand-overs between the enriching worker and the writing task.
    client = await make_client(batch_size=3)
    store = client.server.app[store_key]
    expected: list[int] = []
    for round_ in range(1, 4):
        batch = [{**km, "killmail_id": km["killmail_id"] + round_ * 10**10} for km in killmails]
        resp = await client.post("/api/killmails", data=json.dumps(batch), headers=AUTH)
        assert resp.status == 202
        expected += [km["killmail_id"] for km in batch]
        await settle(client)
        # Found by the channel tests: idle was reported while the last prepared batch waited
        # for the previous write, so a read right after settle() missed kills.
        assert await store.count() == len(expected)
        assert await store.inbox_count() == 0
    rows = await store.after(0, 500)
    assert [r.killmail_id for r in rows] == expected  # stored (seq) order is the queue's order
