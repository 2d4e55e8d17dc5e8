"""Sides of a battle from who shot whom: any number of them, deterministic for the same kills.

Each pilot stands for their alliance, else their corporation, else their faction (an *entity*).
Every kill adds, once per kill whatever the number of pilots:

- co-attack: +1 between every two entities on the attackers' list (they shot the same ship);
- hostility: +1 between the victim's entity and each attacking entity (one shot the other).
  A victim's own entity on its attackers' list is an awox (or a blue-on-blue shot): it counts
  for nothing, so one spy never splits an alliance.

Entities are then joined greedily, strongest first, while co-attack outweighs HATE times the
hostility between the two groups (average linkage would let a big blob swallow its enemies;
the sum of the pair scores of two groups is what decides). zKillboard's Related.php and
EVE-KILL's Battles.ts force everything onto two teams; here a third party that shot both
stays on a side of its own. A group that hardly shared a kill with anyone outside it (it only
died, or shot alone) joins the side most hostile to the side that fought it ("the enemy of my
enemy"), unless it fought that side too; else it stands alone.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence

# One shot between two groups outweighs this many shared victims: fleets that fought side by side
# in a brawl share many kill mails with a third party, and the odd blue-on-blue shot between
# allies is far rarer than their co-attacks.
HATE = 4
# A kill of hundreds of attackers adds its pairs for the largest entities only (pairs grow n^2).
MAX_ENTITIES_A_KILL = 40

BREATHE = 32  # kills between calls of `breathe`

PilotRow = tuple[int, int, int, int, int, int, int]


def entity_of(pilot: Sequence[int]) -> int:
    """Alliance, else corporation, else faction (0: nobody, e.g. a structure's lone weapon)."""
    return pilot[2] or pilot[1] or pilot[3]


class Graph:
    """Co-attack and hostility weights between entities, added to kill by kill."""

    __slots__ = ("attacked", "coop", "hostile", "pilots")

    def __init__(self) -> None:
        self.coop: dict[tuple[int, int], int] = defaultdict(int)
        self.hostile: dict[tuple[int, int], int] = defaultdict(int)
        self.pilots: dict[int, int] = defaultdict(int)  # pilot appearances, for ordering
        self.attacked: set[int] = set()  # entities seen on an attackers' list

    def add(self, pilots: Sequence[Sequence[int]]) -> None:
        if not pilots:
            return
        victim = entity_of(pilots[0])
        counts: dict[int, int] = defaultdict(int)
        for pilot in pilots[1:]:
            entity = entity_of(pilot)
            if entity:
                counts[entity] += 1
        if victim:
            self.pilots[victim] += 1
        for entity, n in counts.items():
            self.pilots[entity] += n
            self.attacked.add(entity)
            if victim and entity != victim:
                self.hostile[_pair(victim, entity)] += 1
        shooters = sorted(counts, key=lambda e: (-counts[e], e))[:MAX_ENTITIES_A_KILL]
        for i, a in enumerate(shooters):
            for b in shooters[i + 1 :]:
                self.coop[_pair(a, b)] += 1


def _pair(a: int, b: int) -> tuple[int, int]:
    return (a, b) if a < b else (b, a)


def sides(graph: Graph) -> list[list[int]]:
    """The entities of each side, the largest side (pilot appearances) first; each side sorted."""
    entities = sorted(graph.pilots)
    group = {e: e for e in entities}  # entity -> its group's label (the smallest entity in it)
    members: dict[int, list[int]] = {e: [e] for e in entities}
    # Net links between groups: (coop, hostile), kept symmetric.
    links: dict[int, dict[int, list[int]]] = defaultdict(dict)
    for (a, b), n in graph.coop.items():
        links[a].setdefault(b, [0, 0])[0] += n
        links[b][a] = links[a][b]
    for (a, b), n in graph.hostile.items():
        link = links[a].setdefault(b, [0, 0])
        link[1] += n
        links[b][a] = link
    heap: list[tuple[int, int, int]] = []
    for a in entities:
        for b, (coop, hostile) in links[a].items():
            if a < b and coop - HATE * hostile > 0:
                heap.append((-(coop - HATE * hostile), a, b))
    heapq.heapify(heap)
    while heap:
        negative, a, b = heapq.heappop(heap)
        if group.get(a) != a or group.get(b) != b:
            continue  # merged away since
        current = links[a].get(b)
        if current is None or -(current[0] - HATE * current[1]) != negative:
            continue  # stale score
        keep, gone = (a, b) if a < b else (b, a)
        for entity in members[gone]:
            group[entity] = keep
        members[keep] += members.pop(gone)
        # The merged group's links are the sums of both.
        for other, (coop, hostile) in list(links.pop(gone).items()):
            links[other].pop(gone, None)
            if other == keep:
                continue
            mine = links[keep].setdefault(other, [0, 0])
            mine[0] += coop
            mine[1] += hostile
            links[other][keep] = mine
        links[keep].pop(gone, None)
        for other, (coop, hostile) in links[keep].items():
            score = coop - HATE * hostile
            if score > 0:
                heapq.heappush(heap, (-score, min(keep, other), max(keep, other)))
    _place_victims_only(graph, group, members, links)
    weight = {g: sum(graph.pilots[e] for e in m) for g, m in members.items()}
    return [sorted(members[g]) for g in sorted(members, key=lambda g: (-weight[g], g))]


def _place_victims_only(
    graph: Graph, group: dict[int, int], members: dict[int, list[int]], links: dict[int, dict[int, list[int]]]
) -> None:
    """A group that hardly shared a kill with anyone outside it (it only died, or shot alone) is
    put with the enemies of those who fought it, unless it fought them too."""
    weight = {g: sum(graph.pilots[e] for e in m) for g, m in members.items()}
    lone = [g for g in members if _mostly_fought(g, links)]
    # The smallest first, and only into a side at least as large: two armies that only shot each
    # other are both "lone" and must not fold into one.
    for g in sorted(lone, key=lambda g: (weight[g], g)):
        if g not in members:
            continue
        killers = {o: h for o, (_, h) in links.get(g, {}).items() if h and o in members and o != g}
        if not killers:
            continue
        killer = min(killers, key=lambda o: (-killers[o], o))
        foes = {
            o: h
            for o, (_, h) in links.get(killer, {}).items()
            if h
            and o in members
            and o not in (g, killer)
            and weight.get(o, 0) >= weight[g]
            and HATE * killers.get(o, 0) < killers[killer]
        }
        if not foes:
            continue
        friend = min(foes, key=lambda o: (-foes[o], o))
        for entity in members[g]:
            group[entity] = friend
        members[friend] += members.pop(g)
        weight[friend] += weight.pop(g)
        for other, (coop, hostile) in list(links.pop(g, {}).items()):
            links[other].pop(g, None)
            if other != friend:
                mine = links[friend].setdefault(other, [0, 0])
                mine[0] += coop
                mine[1] += hostile
                links[other][friend] = mine


def _mostly_fought(g: int, links: dict[int, dict[int, list[int]]]) -> bool:
    coop = sum(c for o, (c, _) in links.get(g, {}).items() if o != g)
    hostile = sum(h for o, (_, h) in links.get(g, {}).items() if o != g)
    return hostile > 0 and coop * HATE <= hostile


def assign(kills: Iterable[Sequence[Sequence[int]]], breathe: Callable[[], None] | None = None) -> list[list[int]]:
    """Sides of a battle from its kills' pilots (each kill: the victim first, then the attackers).
    `breathe` is called every few kills (in a thread: lets the event loop have the GIL)."""
    graph = Graph()
    for i, pilots in enumerate(kills):
        graph.add(pilots)
        if breathe is not None and i % BREATHE == BREATHE - 1:
            breathe()
    return sides(graph)


def moved(found: list[list[int]], moves: Mapping[int, int]) -> list[list[int]]:
    """`found` with entities moved to other sides (side numbers from 1; one past the last makes a
    new side): a reader's view, nothing stored."""
    out = [list(side) for side in found]
    for entity, number in sorted(moves.items()):
        for side in out:
            if entity in side:
                side.remove(entity)
        while len(out) < number:
            out.append([])
        out[number - 1].append(entity)
    return [sorted(side) for side in out]
