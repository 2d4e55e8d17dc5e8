"""hub.Delivered (the per-socket record a replay consults so it never repeats a kill), the
outbox's byte count and the per-socket byte budget."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import rawws
from conftest import AUTH, settle
from hypothesis import given
from hypothesis import strategies as st

from killboard.live.hub import Delivered, Outbox
from killboard.web.keys import hub_key

SUB = json.dumps({"action": "sub", "channel": "kills"})


@given(st.lists(st.integers(min_value=1, max_value=400), max_size=300), st.integers(min_value=1, max_value=200))
def test_delivered_knows_exactly_the_recent_seqs(seqs: list[int], window: int) -> None:
    """Live kills come in order, replays send older ones later: any insertion order works, and
    everything within `window` of the newest seq is remembered exactly."""
    record = Delivered(window)
    for seq in seqs:
        record.add(seq)
    if not seqs:
        assert 5 not in record
        return
    newest = max(seqs)
    sent = set(seqs)
    for seq in range(newest - window + 1, newest + 2):
        assert (seq in record) == (seq in sent), seq
    # Runs stay sorted, disjoint and not adjacent (merged), and the memory stays bounded.
    assert record.los == sorted(record.los)
    assert all(lo <= hi for lo, hi in zip(record.los, record.his, strict=True))
    assert all(record.his[i] + 1 < record.los[i + 1] for i in range(len(record.los) - 1))
    assert all(hi > newest - window for hi in record.his)


def test_a_broad_channel_is_one_run() -> None:
    record = Delivered(1000)
    for seq in range(1, 5001):
        record.add(seq)
    assert (record.los, record.his) == ([1], [5000])


async def test_a_live_client_that_stops_reading_is_dropped_at_its_byte_budget(
    make_client: Any, killmails: list[dict[str, Any]]
) -> None:
    """The budget counts the outbox and the transport's unsent bytes: a client that never reads
    is closed with 1013 once they pass KILLBOARD_WS_SEND_BUFFER, long before 512 frames, while a
    client that reads gets every kill."""
    budget = 512 * 1024
    client = await make_client(ws_send_buffer=budget, batch_size=10)
    hub = client.server.app[hub_key]
    reader = await client.ws_connect("/ws")
    await reader.send_str(SUB)
    assert (await reader.receive_json(timeout=5))["action"] == "subscribed"
    _r, stalled = await rawws.connect(client.server.host, client.server.port, rcvbuf=4096)
    await rawws.send_text(stalled, SUB)
    for _ in range(200):
        if hub.subscribed_count() == 2:
            break
        await asyncio.sleep(0.01)
    slow = list(hub._subscribers.values())[-1]  # the one that never reads (attached last)
    most = 0

    def watch() -> None:
        nonlocal most
        most = max(most, hub.held_bytes(slow))
        if not slow.dropped:
            asyncio.get_running_loop().call_soon(watch)

    watch()
    # ~9 MB of frames: more than the kernel takes into its socket buffers for the stalled client.
    kills = [{**km, "killmail_id": km["killmail_id"] + n * 10**10} for n in range(4) for km in killmails]

    async def read_all() -> int:
        got = 0
        while got < len(kills):
            if (await reader.receive_json(timeout=10))["action"] == "kill":
                got += 1
        return got

    reading = asyncio.create_task(read_all())
    for i in range(0, len(kills), len(killmails)):
        resp = await client.post("/api/killmails", data=json.dumps(kills[i : i + len(killmails)]), headers=AUTH)
        assert resp.status == 202
    await settle(client)
    assert await reading == len(kills)
    assert slow.dropped and slow.close_code == 1013, "the client that never reads was not dropped"
    assert slow.close_message == b"send buffer full: client reads too slowly"
    largest = max(len(json.dumps(km)) for km in killmails) * 8  # an enriched frame is several times its ESI body
    assert most <= budget + largest, most
    stalled.transport.abort()


def test_outbox_counts_the_bytes_it_holds() -> None:
    box = Outbox(4)
    box.put_nowait(b"abc", 3)
    box.put_nowait(b"compressed", 100)  # a frame's wire size need not be its length
    assert box.nbytes == 103
    assert box.get_nowait() == b"abc" and box.nbytes == 100
    box.get_nowait()
    assert box.nbytes == 0 and box.empty()
