"""Catch-up for a client that comes back: the stored kills after its last seq, filtered by its
channel, then the live ones, with no gap and no duplicate between the two.

The channel is subscribed and the socket's live kills are held back *before* the store is read.
The replay sends the stored kills up to the last seq it saw when it started; then the held live
frames go out, except those the replay covered; then live delivery resumes. A kill committed
while the replay runs is either read by it, or held, or both (and then sent once). A kill the
socket already got live on another channel (hub.Delivered) is not sent again.
"""

from __future__ import annotations

import asyncio
import logging

import ujson
from aiohttp import WSCloseCode

from .hub import Hub, Subscriber
from .store import Store
from .topics import ALL, Condition, kill_facts

log = logging.getLogger(__name__)

PAGE = 200
# A client that takes no replayed frame for this long is not reading: drop it, as a live laggard.
STALL_TIMEOUT = 10.0


async def replay(
    hub: Hub, store: Store, sub: Subscriber, condition: Condition, channel: str, since: int, cap: int
) -> int:
    """Send `{"action":"replay",...}`, then the kills after `since` matching `condition` (at most
    the last `cap` stored kills are read), then hand over to live delivery. Returns kills sent."""
    hub.hold(sub)
    sent = 0
    try:
        end = await store.last_seq()
        start = max(since, end - cap)
        recovered = start == since
        hub.send_json(sub, {"action": "replay", "channel": channel, "recovered": recovered, "from": start, "to": end})
        if not recovered:
            log.info("replay for %r: %d kills after %d exceed the cap of %d", channel, end - since, since, cap)
        cursor = start
        every = condition.keys == {ALL}
        while cursor < end and not sub.dropped:
            rows = await store.after(cursor, min(PAGE, end - cursor))
            if not rows:
                break
            for row in rows:
                if row.seq > end:
                    break
                if row.seq in sub.delivered:
                    continue  # it came live on another of the socket's channels: once is enough
                facts = None if every else hub.recent_facts.get(row.seq) or kill_facts(ujson.loads(row.body))
                if facts is None or condition.matches(facts):
                    if not await _put(hub, sub, await hub.replay_frame(sub, row.seq, row.body)):
                        return sent
                    sub.delivered.add(row.seq)
                    sent += 1
            cursor = rows[-1].seq
        # Hand over: live kills held meanwhile, minus those this replay covered (or left to the
        # client to page through the REST API). More may arrive while we wait on the outbox.
        while sub.held:
            seq, frame, facts = sub.held.popleft()
            if since < seq <= end and condition.matches(facts):
                continue
            if not await _put(hub, sub, frame):
                return sent
            sub.delivered.add(seq)
        return sent
    finally:
        sub.held = None  # no await since the loop found the buffer empty: live delivery resumes


async def _put(hub: Hub, sub: Subscriber, frame: bytes) -> bool:
    """Queue a frame, waiting for room (a replay may be longer than the outbox)."""
    if sub.dropped:
        return False
    try:
        async with asyncio.timeout(STALL_TIMEOUT):
            await sub.outbox.put(frame)
    except TimeoutError:
        hub.drop(sub, WSCloseCode.TRY_AGAIN_LATER, b"replay stalled: client reads too slowly")
        return False
    return True
