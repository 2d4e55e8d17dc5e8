"""What waits for the worker: a pending kill, the queue that bounds them in kills and in bytes,
and the inbox rows each is recorded as before it is acknowledged."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from ..kill.frames import encode_ascii
from ..kill.validate import Submission
from ..storage.rows import InboxRow
from .offload import Packed, from_payload


@dataclass(frozen=True, slots=True)
class Pending:
    submission: Submission
    live: bool
    # Its inbox payload's length: what it counts against the queue's bound in bytes (KillQueue).
    size: int = 0


class KillQueue(asyncio.Queue[Pending]):
    """The worker's queue, bounded in kills (`maxsize`) and in bytes (`max_bytes`, checked by
    Pipeline's admission). `nbytes` counts each kill's inbox payload from its put until the
    worker's task_done for it, so what the worker has taken and not yet stored (its batches)
    counts too: a queued kill is ~10 KB, a fleet fight 10+ MB, and a count alone let N kills
    hold N fleet fights. A parsed kill takes a few times its payload in memory; a fleet fight
    from a POST stays packed bytes (offload.Packed), about its payload."""

    def __init__(self, maxsize: int, max_bytes: int) -> None:
        super().__init__(maxsize)
        self.max_bytes = max_bytes
        self.nbytes = 0
        # Sizes of the kills taken, in the order taken: the worker marks them done in that
        # order (its batches are committed one after another).
        self._taken: deque[int] = deque()

    def _put(self, item: Pending) -> None:
        super()._put(item)
        self.nbytes += item.size

    def _get(self) -> Pending:
        item = super()._get()
        self._taken.append(item.size)
        return item

    def task_done(self) -> None:
        super().task_done()
        if self._taken:
            self.nbytes -= self._taken.popleft()


def inbox_payload(sub: Submission) -> bytes:
    if isinstance(sub, Packed):
        return sub.payload  # made by the worker process (offload.pack), the same bytes
    # ASCII (ensure_ascii): a lone surrogate accepted from a client survives the round trip.
    return encode_ascii({"id": sub.killmail_id, "hash": sub.killmail_hash, "esi": sub.esi, "zkb": sub.zkb})


def inbox_rows(subs: Sequence[Submission], source: str, live: bool) -> list[InboxRow]:
    return [InboxRow(s.killmail_id, inbox_payload(s), source, live) for s in subs]


def from_inbox(row: InboxRow) -> Pending:
    return Pending(from_payload(row.payload), row.live, len(row.payload))
