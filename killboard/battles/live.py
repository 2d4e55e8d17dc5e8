"""The WebSocket channels `battles` and `battle:<id>`: battle frames, throttled, and a battle's kills.

`battles`: `{"action":"battle","seq":N,"data":summary}` when a battle starts, as it grows (at
most one frame per battle every THROTTLE seconds, with its latest state) and when it ends.
`battle:<id>`: that battle's kills as kill frames, and its battle frames. `seq` of a battle frame
is the newest kill that changed it, so `since` resumes both channels as it does the kill channels:
the battles changed by kills after it, the battle's kills after it. Frames go through the hub
(hub.send), so each socket's byte budget and slow-client drop apply as to kills.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from ..kill.frames import encode, kill_frame
from ..live.hub import Hub
from ..live.subscriber import Subscriber
from ..storage.store import Store
from . import tables

log = logging.getLogger(__name__)

THROTTLE = 3.0  # seconds: at most one frame per battle this often
END_CHECK = 30.0  # seconds between looks for battles that have gone quiet
RESUME_BATTLES = 50  # battle frames a `since` on `battles` sends at most
CHANNEL = re.compile(r"battle:([0-9]{1,18})\Z")

Summarize = Callable[[int], Awaitable[dict[str, Any] | None]]


class BadBattleChannel(ValueError):
    """A battle channel we cannot use; the message says why."""


def parse(channel: str) -> int | None:
    """0 for `battles`, the id for `battle:<id>`, None when it is not a battle channel at all."""
    if channel == "battles":
        return 0
    if not channel.startswith("battle:"):
        return None
    match = CHANNEL.match(channel)
    if match is None or int(match.group(1)) <= 0:
        raise BadBattleChannel(f"channel {channel[:80]!r}: battle: needs a positive integer id, e.g. battle:12")
    return int(match.group(1))


@dataclass(eq=False)
class BattleChannels:
    """Who follows which battles, and the throttled frames to them."""

    hub: Hub
    store: Store
    summarize: Summarize  # battle id -> its summary (None: gone)
    replay_max: int = 1000
    end_check: float = END_CHECK  # seconds between looks for battles that went quiet
    followers: dict[int, set[Subscriber]] = field(default_factory=lambda: defaultdict(set))  # 0: all battles
    dirty: dict[int, float] = field(default_factory=dict)  # battle id -> when first changed
    ongoing: set[int] = field(default_factory=set)  # battles last sent as ongoing
    checking: set[int] = field(default_factory=set)  # due only to see whether they have ended
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _sent_at: dict[int, float] = field(default_factory=dict)

    def channels_of(self, sub: Subscriber) -> int:
        return sum(1 for subs in self.followers.values() if sub in subs)

    def subscribe(self, sub: Subscriber, battle_id: int) -> None:
        self.followers[battle_id].add(sub)

    def unsubscribe(self, sub: Subscriber, battle_id: int) -> None:
        subs = self.followers.get(battle_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self.followers[battle_id]

    def detach(self, sub: Subscriber) -> None:
        for battle_id in [b for b, subs in self.followers.items() if sub in subs]:
            self.unsubscribe(sub, battle_id)

    # -- from the pipeline (after the commit) ----------------------------------------------

    def kill(self, seq: int, battle_id: int, body: Callable[[], bytes]) -> None:
        """A stored kill joined a battle: its frame to the battle's followers, and the battle
        is due a frame."""
        subs = self.followers.get(battle_id)
        if subs:
            frame = kill_frame(seq, body())
            for sub in list(subs):
                if seq not in sub.delivered and self.hub.send(sub, frame):
                    sub.delivered.add(seq)
        self.changed(battle_id)

    def changed(self, battle_id: int) -> None:
        self.checking.discard(battle_id)  # a real change: its frame goes out
        if battle_id not in self.dirty:
            self.dirty[battle_id] = asyncio.get_running_loop().time()
        self._wake.set()

    def merged(self, gone: int, kept: int) -> None:
        """Followers of a battle that merged into another follow the one that stays."""
        for sub in self.followers.pop(gone, set()):
            self.followers[kept].add(sub)
            self.hub.send_json(sub, {"action": "battle_merged", "battle_id": gone, "into": kept})
        self.dirty.pop(gone, None)
        self.changed(kept)

    # -- sending ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Send due battle frames: each battle at most once per THROTTLE, with its latest state."""
        loop = asyncio.get_running_loop()
        last_end_check = loop.time()
        while True:
            with suppress(TimeoutError):
                async with asyncio.timeout(self.end_check):
                    await self._wake.wait()
            self._wake.clear()
            now = loop.time()
            if now - last_end_check >= self.end_check:
                last_end_check = now
                for battle_id in list(self.ongoing):
                    if battle_id not in self.dirty:
                        self.changed(battle_id)
                        self.checking.add(battle_id)  # a frame only if it has ended
            due = [b for b in self.dirty if now - self._sent_at.get(b, -THROTTLE) >= THROTTLE]
            for battle_id in due:
                del self.dirty[battle_id]
                try:
                    await self.send(battle_id)
                except Exception:  # a bug: this frame is lost, the channel goes on
                    log.exception("battle %d: frame failed", battle_id)
                self._sent_at[battle_id] = loop.time()
            if self.dirty:
                wait = min(THROTTLE - (loop.time() - self._sent_at.get(b, 0.0)) for b in self.dirty)
                await asyncio.sleep(max(0.05, wait))
                self._wake.set()
            if len(self._sent_at) > 10_000:
                cut = loop.time() - THROTTLE
                self._sent_at = {b: t for b, t in self._sent_at.items() if t > cut}

    async def send(self, battle_id: int) -> None:
        """The battle's current summary to `battles` and `battle:<id>` followers."""
        targets = self.followers.get(0, set()) | self.followers.get(battle_id, set())
        if not targets:
            # Nobody follows it: only whether it still goes on matters (the end check), which its
            # row says. Its summary (its kills read back and summed up: ~6% of the event loop in a
            # catch-up, once per growing battle every THROTTLE) is not worked out for nobody.
            row = await tables.get(self.store, battle_id)
            self.checking.discard(battle_id)
            if row is not None and row.merged_into is None and row.ongoing(time.time()):
                self.ongoing.add(battle_id)
            else:
                self.ongoing.discard(battle_id)
            return
        data = await self.summarize(battle_id)
        if data is None:
            self.ongoing.discard(battle_id)
            return
        only_ending = battle_id in self.checking
        self.checking.discard(battle_id)
        if data["ongoing"]:
            self.ongoing.add(battle_id)
            if only_ending:
                return  # nothing new: no frame
        else:
            self.ongoing.discard(battle_id)
        if not targets:
            return
        frame = battle_frame(data)
        for sub in list(targets):
            self.hub.send(sub, frame)

    async def resume(self, sub: Subscriber, battle_id: int, channel: str, since: int) -> int:
        """A `since` on a battle channel: what changed after it, then live as usual."""
        sent = 0
        if battle_id == 0:
            rows = await tables.changed_since(self.store, since, RESUME_BATTLES)
            self.hub.send_json(sub, {"action": "replay", "channel": channel, "from": since, "count": len(rows)})
            for row in rows:
                data = await self.summarize(row.battle_id)
                if data is not None and self.hub.send(sub, battle_frame(data)):
                    sent += 1
            return sent
        seqs = [
            row[0]
            for row in await self.store.query(
                "SELECT seq FROM battle_kills WHERE battle_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (battle_id, since, self.replay_max),
            )
        ]
        self.hub.send_json(sub, {"action": "replay", "channel": channel, "from": since, "count": len(seqs)})
        for i in range(0, len(seqs), 32):
            for kill in await self.store.by_seqs(seqs[i : i + 32]):
                if kill.seq in sub.delivered:
                    continue
                await self.hub.put(sub, kill_frame(kill.seq, kill.body))
                sub.delivered.add(kill.seq)
                sent += 1
            if sub.dropped:
                return sent
        data = await self.summarize(battle_id)
        if data is not None:
            self.hub.send(sub, battle_frame(data))
        return sent


def battle_frame(data: dict[str, Any]) -> bytes:
    return encode({"action": "battle", "seq": data.get("seq", 0), "data": data})
