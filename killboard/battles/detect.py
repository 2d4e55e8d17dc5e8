"""Segmenting kills into battles as they arrive: pure, in memory, no I/O (tables.py stores it).

A battle is a run of kills in one solar system (and neighbouring systems of its constellation
where the same entities fight) that reaches MIN_KILLS in any SEGMENT seconds and ends after GAP
quiet seconds. A kill whose time falls within GAP of a battle in its system joins it, however
late it arrives; a kill that touches two battles merges them into the older id.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

SEGMENT = 5 * 60  # a battle starts when this many seconds hold MIN_KILLS kills (EVE-KILL's segment)
MIN_KILLS = 5
GAP = 30 * 60  # ... and ends after this long without a kill (EVE-KILL's 6 quiet segments)
# Kills not (yet) in a battle are remembered this far behind the newest kill time seen; an older
# late kill is looked up in the database instead (tables.hydrate).
HORIZON = 6 * 3600
POOL_MAX = 20_000  # kills remembered at most, over all systems (oldest forgotten first)
# A kill in a neighbouring system joins a battle when at least this share of its entities fight in it.
NEIGHBOUR_SHARE = 0.5
_LAST = 2**63  # above every seq: bisects to the end of a kill time's entries


class Point:
    """What detection needs of one stored kill. Its entities (alliance-else-corporation of every
    pilot, both sides) are worked out from its pilots only when asked: most kills are in no
    battle and never need them."""

    __slots__ = ("_entities", "_pilots", "constellation", "region", "seq", "system", "time", "value")

    def __init__(
        self,
        seq: int,
        time: int,  # unix seconds
        system: int,
        constellation: int,
        region: int,
        value: float,
        entities: frozenset[int] | None = None,
        pilots: Sequence[Sequence[int]] = (),
    ) -> None:
        self.seq, self.time, self.system = seq, time, system
        self.constellation, self.region, self.value = constellation, region, value
        self._entities = entities
        self._pilots = pilots

    @property
    def entities(self) -> frozenset[int]:
        if self._entities is None:
            found = frozenset([p[2] or p[1] or p[3] for p in self._pilots])
            self._entities = found - {0} if 0 in found else found
            self._pilots = ()
        return self._entities

    def __lt__(self, other: Point) -> bool:  # pool entries tie on (time, seq) never; for safety
        return self.seq < other.seq


@dataclass(slots=True)
class Battle:
    battle_id: int
    systems: set[int]
    constellation: int
    region: int
    start: int
    end: int
    kill_count: int = 0
    isk: float = 0.0
    last_seq: int = 0
    entities: set[int] = field(default_factory=set)

    def covers(self, t: int) -> bool:
        return self.start - GAP <= t <= self.end + GAP

    def take(self, p: Point) -> None:
        self.systems.add(p.system)
        self.start = min(self.start, p.time)
        self.end = max(self.end, p.time)
        self.kill_count += 1
        self.isk += p.value
        self.last_seq = max(self.last_seq, p.seq)
        if len(self.entities) < 5000:  # for neighbour matching only: bounded
            self.entities |= p.entities


@dataclass(slots=True)
class Changes:
    """What one call of Detector.add changed, for the store and the live channel."""

    assigned: list[tuple[int, int]] = field(default_factory=list)  # (seq, battle_id)
    created: set[int] = field(default_factory=set)
    touched: set[int] = field(default_factory=set)
    merged: list[tuple[int, int]] = field(default_factory=list)  # (gone, kept)
    redirect: dict[int, int] = field(default_factory=dict)  # gone -> kept, chains followed

    def __bool__(self) -> bool:
        return bool(self.assigned or self.merged)

    def final(self, battle_id: int) -> int:
        return self.redirect.get(battle_id, battle_id)

    def resolved(self) -> list[tuple[int, int]]:
        """`assigned` with merged battles replaced by the ones they merged into."""
        if not self.redirect:
            return self.assigned
        return [(seq, self.redirect.get(b, b)) for seq, b in self.assigned]


class Detector:
    """Open battles and the recent kills outside any battle, per system."""

    def __init__(self, next_id: int = 1) -> None:
        self.next_id = next_id
        self.battles: dict[int, Battle] = {}
        self._by_system: dict[int, set[int]] = defaultdict(set)
        self._by_constellation: dict[int, set[int]] = defaultdict(set)
        self._pool: dict[int, list[tuple[int, int, Point]]] = defaultdict(list)  # system -> sorted (time, seq, p)
        self._pooled = 0
        self.newest = 0  # the newest kill time seen
        self._forgot_at = 0
        # Battles dropped from memory past the horizon, kept here when set (a rebuild needs all).
        self.closed: list[Battle] | None = None

    # -- state loaded from the database ----------------------------------------------------

    def load_battle(self, battle: Battle) -> None:
        self.battles[battle.battle_id] = battle
        for system in battle.systems:
            self._by_system[system].add(battle.battle_id)
        self._by_constellation[battle.constellation].add(battle.battle_id)
        self.next_id = max(self.next_id, battle.battle_id + 1)
        self.newest = max(self.newest, battle.end)

    def load_pooled(self, p: Point) -> None:
        pool = self._pool[p.system]
        i = bisect.bisect_left(pool, (p.time, p.seq))  # a kill's time never changes: one place to look
        if i == len(pool) or pool[i][1] != p.seq:
            pool.insert(i, (p.time, p.seq, p))
            self._pooled += 1

    def pooled(self, systems: Iterable[int], start: int, end: int) -> list[int]:
        """The seqs of the loose kills in memory in these systems from `start` to `end`."""
        out = []
        for system in systems:
            pool = self._pool.get(system)
            if pool:
                i, j = bisect.bisect_left(pool, (start,)), bisect.bisect_right(pool, (end, _LAST))
                out += [seq for _, seq, _ in pool[i:j]]
        return out

    def unpool(self, systems: Iterable[int], seqs: Iterable[int]) -> None:
        """Take these kills (of these systems) out of the loose pool: another process put them
        in a battle."""
        gone = set(seqs)
        for system in set(systems):
            pool = self._pool.get(system)
            if not pool:
                continue
            kept = [entry for entry in pool if entry[1] not in gone]
            if len(kept) != len(pool):
                self._pooled -= len(pool) - len(kept)
                if kept:
                    self._pool[system] = kept
                else:
                    del self._pool[system]

    def near(self, constellation: int) -> list[int]:
        """The battles in memory in this constellation (where a kill there may merge them)."""
        return sorted(self._by_constellation.get(constellation, ()))

    def trim(self) -> None:
        """Keep memory's bounds after kills were loaded rather than added (catchup.fold)."""
        if self._pooled > POOL_MAX or self.newest - self._forgot_at > GAP:
            self._forgot_at = self.newest
            self._forget()

    def knows(self, t: int) -> bool:
        """Whether memory reaches back to kill time `t` (else the database must be asked)."""
        return t >= self.newest - HORIZON

    # -- detection ----------------------------------------------------------------------------

    def add(self, points: Iterable[Point], changes: Changes | None = None) -> Changes:
        changes = changes if changes is not None else Changes()
        for p in points:
            self._add(p, changes)
        return changes

    def _add(self, p: Point, changes: Changes) -> None:
        if p.time > self.newest:
            self.newest = p.time
            if self.newest - self._forgot_at > GAP:  # now and then, not on every kill
                self._forgot_at = self.newest
                self._forget(self._unwritten(changes))
        here = self._by_system.get(p.system)
        found = sorted(b for b in here if self.battles[b].covers(p.time)) if here else []
        if not found and self._by_constellation.get(p.constellation):
            found = self._neighbour(p)
        if found:
            keep = found[0]
            self._join(keep, p, changes)
            for gone in found[1:]:
                self._merge(gone, keep, changes)
            return
        pool = self._pool[p.system]
        bisect.insort(pool, (p.time, p.seq, p))
        self._pooled += 1
        run = self._run(pool, p.time)
        if run is not None:
            self._create(p, pool, run, changes)
        elif self._pooled > POOL_MAX:
            self._forget(self._unwritten(changes))

    def _neighbour(self, p: Point) -> list[int]:
        if not p.entities:
            return []
        out = []
        for b in self._by_constellation.get(p.constellation, ()):
            battle = self.battles[b]
            if battle.covers(p.time) and len(p.entities & battle.entities) >= NEIGHBOUR_SHARE * len(p.entities):
                out.append(b)
        return sorted(out)

    def _join(self, battle_id: int, p: Point, changes: Changes) -> None:
        battle = self.battles[battle_id]
        if p.system not in battle.systems:
            self._by_system[p.system].add(battle_id)
        battle.take(p)
        changes.assigned.append((p.seq, battle_id))
        changes.touched.add(battle_id)

    def _merge(self, gone: int, keep: int, changes: Changes) -> None:
        """Two battles grew into each other: the older id stays, the other redirects to it."""
        g, k = self.battles.pop(gone), self.battles[keep]
        for system in g.systems:
            self._by_system[system].discard(gone)
            self._by_system[system].add(keep)
        self._by_constellation[g.constellation].discard(gone)
        k.systems |= g.systems
        k.start, k.end = min(k.start, g.start), max(k.end, g.end)
        k.kill_count += g.kill_count
        k.isk += g.isk
        k.last_seq = max(k.last_seq, g.last_seq)
        k.entities |= g.entities
        changes.merged.append((gone, keep))
        # Kills assigned to `gone` earlier in this call are resolved through `redirect` when
        # written (rewriting the list on every merge made a rebuild quadratic).
        for old, new in changes.redirect.items():
            if new == gone:
                changes.redirect[old] = keep
        changes.redirect[gone] = keep
        changes.created.discard(gone)
        changes.touched.discard(gone)
        changes.touched.add(keep)

    @staticmethod
    def _run(pool: list[tuple[int, int, Point]], t: int) -> tuple[int, int] | None:
        """(first, last) index of the run of pooled kills around `t` when some SEGMENT of it
        holds MIN_KILLS kills; None otherwise. Only the kills within SEGMENT of `t` are read
        unless a battle forms (this runs for every kill outside a battle)."""
        i = bisect.bisect_left(pool, (t - SEGMENT,))
        j = bisect.bisect_right(pool, (t + SEGMENT, _LAST))
        if j - i < MIN_KILLS:
            return None
        window = [pool[k][0] for k in range(i, j)]
        if not any(window[k + MIN_KILLS - 1] - window[k] <= SEGMENT for k in range(len(window) - MIN_KILLS + 1)):
            return None
        first, last = i, j - 1
        while first > 0 and pool[first][0] - pool[first - 1][0] <= GAP:
            first -= 1
        while last + 1 < len(pool) and pool[last + 1][0] - pool[last][0] <= GAP:
            last += 1
        return first, last

    def _create(self, p: Point, pool: list[tuple[int, int, Point]], run: tuple[int, int], changes: Changes) -> None:
        battle = Battle(self.next_id, set(), p.constellation, p.region, p.time, p.time)
        self.next_id += 1
        self.battles[battle.battle_id] = battle
        self._by_system[p.system].add(battle.battle_id)
        self._by_constellation[p.constellation].add(battle.battle_id)
        first, last = run
        for _, _, q in pool[first : last + 1]:
            battle.take(q)
            changes.assigned.append((q.seq, battle.battle_id))
        del pool[first : last + 1]
        self._pooled -= last + 1 - first
        changes.created.add(battle.battle_id)
        changes.touched.add(battle.battle_id)

    def _unwritten(self, changes: Changes) -> set[int]:
        """The battles this call changed, which the database holds as they were before it until
        the batch is written: memory must keep them (a batch of a fight and of one hours later,
        two streams posted at once), or the store would not write them, and a late kill of their
        fight in the batch would read their rows back without the batch's kills. A rebuild keeps
        every battle it drops (`closed`), so it need not."""
        return changes.touched if self.closed is None else set()

    def _forget(self, keep: set[int] | frozenset[int] = frozenset()) -> None:
        """Drop pooled kills and closed battles older than the horizon (a late kill past it is
        matched from the database), and the oldest pooled kills past POOL_MAX. `keep`: battles
        not to drop yet (the ones this batch changed)."""
        cut = self.newest - HORIZON - GAP
        for system in list(self._pool):
            pool = self._pool[system]
            k = bisect.bisect_left(pool, (cut, -1))
            if k:
                del pool[:k]
                self._pooled -= k
            if not pool:
                del self._pool[system]
        while self._pooled > POOL_MAX:
            system = min(self._pool, key=lambda s: self._pool[s][0][0])
            self._pool[system].pop(0)
            self._pooled -= 1
            if not self._pool[system]:
                del self._pool[system]
        for battle_id in [b for b, battle in self.battles.items() if battle.end < cut and b not in keep]:
            self.unload(battle_id)

    def renumber(self, changes: Changes, floor: int) -> None:
        """Give the battles this batch created ids above `floor` (another process, an import
        beside the server, may have taken ids since this one's memory was loaded)."""
        moved = {b: floor + i + 1 for i, b in enumerate(sorted(changes.created)) if b <= floor}
        if not moved:
            return
        for old, new in moved.items():
            battle = self.battles.pop(old)
            battle.battle_id = new
            self.battles[new] = battle
            for system in battle.systems:
                self._by_system[system].discard(old)
                self._by_system[system].add(new)
            self._by_constellation[battle.constellation].discard(old)
            self._by_constellation[battle.constellation].add(new)
        changes.created = {moved.get(b, b) for b in changes.created}
        changes.touched = {moved.get(b, b) for b in changes.touched}
        changes.assigned = [(seq, moved.get(b, b)) for seq, b in changes.assigned]
        changes.redirect = {g: moved.get(k, k) for g, k in changes.redirect.items()}
        self.next_id = max(self.next_id, *changes.created) + 1

    def unload(self, battle_id: int) -> None:
        battle = self.battles.pop(battle_id, None)
        if battle is None:
            return
        if self.closed is not None:
            self.closed.append(battle)
        for system in battle.systems:
            self._by_system[system].discard(battle_id)
        self._by_constellation[battle.constellation].discard(battle_id)

    def ongoing(self, now: float) -> list[Battle]:
        return [b for b in self.battles.values() if b.end + GAP > now]
