"""Detection on its own: thresholds, late kills, merges, neighbours, the memory horizon."""

from __future__ import annotations

from killboard.battles.detect import GAP, HORIZON, MIN_KILLS, SEGMENT, Changes, Detector, Point

T0 = 1_700_000_000
JITA, PERIMETER, AMARR = 30000142, 30000144, 30002187  # Jita and Perimeter share a constellation


def kill(
    seq: int, t: int, system: int = JITA, constellation: int = 20000020, entities: tuple[int, ...] = (1, 2)
) -> Point:
    return Point(seq, t, system, constellation, 10000002, 1e6, frozenset(entities))


def test_below_the_threshold_no_battle_then_the_fifth_kill_makes_one() -> None:
    d = Detector()
    spaced = [kill(i, T0 + i * 60) for i in range(1, MIN_KILLS)]  # 4 kills, a minute apart
    assert not d.add(spaced)
    changes = d.add([kill(10, T0 + SEGMENT - 10)])
    assert changes.created == {1}
    # The run includes the kills that led up to it.
    assert sorted(seq for seq, _ in changes.assigned) == [1, 2, 3, 4, 10]


def test_sparse_kills_never_make_a_battle() -> None:
    d = Detector()
    assert not d.add(kill(i, T0 + i * (SEGMENT // 4 + 1)) for i in range(1, 4))
    assert not d.add(kill(i, T0 + i * SEGMENT * 2) for i in range(4, 40))
    assert d.battles == {}


def test_late_kill_joins_and_quiet_gap_ends() -> None:
    d = Detector()
    d.add(kill(i, T0 + i * 10) for i in range(1, 6))
    assert d.add([kill(6, T0 - GAP + 60)]).assigned == [(6, 1)]  # before it, but within the gap
    after = d.add([kill(7, T0 + 50 + GAP + 60)])  # more than GAP after its last kill
    assert after.assigned == []


def test_two_battles_that_grow_into_each_other_merge_into_the_older_id() -> None:
    d = Detector()
    d.add(kill(i, T0 + i * 10) for i in range(1, 6))
    far = T0 + 2 * GAP
    d.add(kill(i, far + i * 10) for i in range(11, 16))
    assert sorted(d.battles) == [1, 2]
    bridge = d.add([kill(20, T0 + GAP + 40)])  # within GAP of the first only
    assert bridge.assigned == [(20, 1)] and not bridge.merged
    changes = d.add([kill(21, T0 + GAP + 120)])  # now within GAP of both
    assert changes.merged == [(2, 1)]
    assert changes.assigned == [(21, 1)]
    assert list(d.battles) == [1] and d.battles[1].kill_count == 12


def test_neighbouring_system_joins_only_with_the_same_entities() -> None:
    d = Detector()
    d.add(kill(i, T0 + i * 10, entities=(1, 2)) for i in range(1, 6))
    strangers = d.add([kill(7, T0 + 100, PERIMETER, entities=(8, 9))])
    assert strangers.assigned == []
    same = d.add([kill(8, T0 + 110, PERIMETER, entities=(1, 2))])
    assert same.assigned == [(8, 1)]
    assert d.battles[1].systems == {JITA, PERIMETER}
    elsewhere = d.add([kill(9, T0 + 120, AMARR, constellation=20000322, entities=(1, 2))])
    assert elsewhere.assigned == []


def test_memory_is_bounded_by_the_horizon() -> None:
    d = Detector()
    d.add(kill(i, T0 + i * 10) for i in range(1, 6))
    d.add(kill(100 + i, T0 + HORIZON + 2 * GAP + i * SEGMENT * 2, system=AMARR) for i in range(3))
    assert 1 not in d.battles  # closed and past the horizon: a late kill reads it from the database
    assert not d.knows(T0)
    assert isinstance(Changes(), Changes)
