"""hub.Delivered (the per-socket record a replay consults so it never repeats a kill), the
outbox's byte count and the per-socket byte budget."""

from __future__ import annotations

import asyncio
import json

from hypothesis import given
from hypothesis import strategies as st

from killboard.live.subscriber import Delivered, Outbox

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


def test_outbox_counts_the_bytes_it_holds() -> None:
    box = Outbox(4)
    box.put_nowait(b"abc", 3)
    box.put_nowait(b"compressed", 100)  # a frame's wire size need not be its length
    assert box.nbytes == 103
    assert box.get_nowait() == b"abc" and box.nbytes == 100
    box.get_nowait()
    assert box.nbytes == 0 and box.empty()


async def test_outbox_clear_drops_everything_and_wakes_a_waiter() -> None:
    """Dropping a client empties its outbox at once (a full one, 512 frames, taken one by one
    cost ~350 us a socket), and a replay waiting for room sees it."""
    box = Outbox(4)
    for i in range(4):
        box.put_nowait(b"x" * i, i)
    waiting = asyncio.ensure_future(box.changed())
    await asyncio.sleep(0)
    box.clear()
    await asyncio.wait_for(waiting, 1)
    assert box.empty() and box.nbytes == 0 and not box.full()
    box.put_nowait(None)
    assert box.get_nowait() is None
