"""The match keys of the newest stored kills, kept in memory so a filtered page tests them there
and reads only the kills it shows.

A filtered page (`/?sec=lowsec&solo=1`) looks through the newest `size` stored kills for the
ones it matches. Reading and rendering those from the database cost ~0.7 ms a kill, so a rare
filter cost 0.5-1.9 s of CPU per request once the database was large. Here each kill's keys are
computed once, when it is first seen; a page then costs one subset test per recent kill plus
the rows it renders. Kills stored by another process (an import beside the server) are picked
up by sequence number on the next page, so the keys never go stale by more than one refresh.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field

import ujson

from ..kill.topics import Condition, Key, kill_facts
from ..storage.rows import StoredKill
from ..storage.store import Store

# Only what a page filter can name is kept (topics, places, the three player entities, ship
# types and groups), so a 1,000-pilot fight costs its pilots' ids and the few dozen hulls they
# flew, not their factions and the victim/attacker keys as well.
PAGE_KINDS = frozenset({"all", "topic", "system", "region", "character", "corporation", "alliance", "ship", "group"})
# A kill with more keys than this (a fight of a few hundred pilots) is kept as "maybe": pages
# read it and test it whole. An average real kill has 35 keys (~5 KB; 27 before ship types and
# groups were kept), the largest of the 82 real test kills 277 (116 attackers); 512 keys are
# ~80 KB, so 1,000 kept kills hold at most ~80 MB even if every one were a 3,000-pilot fight
# (~9,000 keys, ~1.4 MB, if kept whole).
MAX_KEYS = 512
_CHUNK = 200

Keys = frozenset[Key] | None  # None: too many to keep, test the kill itself


def page_keys(body: bytes) -> Keys:
    keys = frozenset(k for k in kill_facts(ujson.loads(body)).keys if k[0] in PAGE_KINDS)
    return keys if len(keys) <= MAX_KEYS else None


def _keys_of(rows: Iterable[StoredKill]) -> dict[int, Keys]:
    return {r.killmail_id: page_keys(r.body) for r in rows}


@dataclass
class RecentKeys:
    """Keys of the newest `size` stored kills by kill id, refreshed from the store on use."""

    size: int = 1000
    _keys: dict[int, Keys] = field(default_factory=dict)
    _seq: int = -1  # the highest seq looked at; -1: nothing loaded yet
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def refresh(self, store: Store) -> None:
        last = await store.last_seq()
        if last == self._seq:
            return
        async with self._lock:
            if last == self._seq:
                return  # another page refreshed while this one waited
            if self._seq < 0 or last - self._seq > self.size:
                # First use, or more new kills than we keep: the newest `size` are all there is
                # to know. `last` is read before them, so a kill stored meanwhile comes again
                # in the next refresh (adding it twice is harmless).
                fresh: dict[int, Keys] = {}
                before: int | None = None
                while len(fresh) < self.size:
                    rows = await store.latest(min(_CHUNK, self.size - len(fresh)), before)
                    if not rows:
                        break
                    fresh.update(await asyncio.to_thread(_keys_of, rows))
                    before = rows[-1].killmail_id
                self._keys, self._seq = fresh, last
            else:
                seq = self._seq
                while True:
                    rows = await store.after(seq, _CHUNK)
                    if not rows:
                        break
                    self._keys.update(await asyncio.to_thread(_keys_of, rows))
                    seq = rows[-1].seq
                self._seq = max(seq, last)
            if len(self._keys) > self.size:
                for killmail_id in sorted(self._keys)[: len(self._keys) - self.size]:
                    del self._keys[killmail_id]

    def matching(self, condition: Condition, limit: int) -> list[int]:
        """Ids of the newest recent kills the condition holds for, newest first: `limit` sure
        matches, plus the kills kept as "maybe" among them (the caller tests those whole)."""
        found: list[int] = []
        sure = 0
        wanted = condition.keys
        for killmail_id in sorted(self._keys, reverse=True):
            keys = self._keys[killmail_id]
            if keys is None or wanted <= keys:
                found.append(killmail_id)
                sure += keys is not None
                if sure == limit:
                    break
        return found

    @property
    def full(self) -> bool:
        """Holds `size` kills: older ones may be stored (web/older.py reads those)."""
        return len(self._keys) >= self.size

    def oldest(self) -> int | None:
        return min(self._keys, default=None)

    def unsure(self, killmail_ids: Iterable[int]) -> set[int]:
        """Those kept as "maybe": a page tests them whole."""
        return {i for i in killmail_ids if i in self._keys and self._keys[i] is None}

    def forget(self, killmail_ids: Iterable[int]) -> None:
        """Kills no longer stored (pruned): a page that asked for them did not find them."""
        for killmail_id in killmail_ids:
            self._keys.pop(killmail_id, None)

    def __len__(self) -> int:
        return len(self._keys)
