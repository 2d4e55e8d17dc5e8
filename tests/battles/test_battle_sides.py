"""Sides on their own: awox, third parties, victims who never shot, moves, determinism."""

from __future__ import annotations

from killboard.battles.sides import assign, moved

# (character, corporation, alliance, faction, ship, damage, final blow)
A, B, C = 99000001, 99000002, 99000003  # alliances


def pilot(character: int, alliance: int, corporation: int = 98000001) -> tuple[int, ...]:
    return (character, corporation, alliance, 0, 587, 100, 0)


def kill(victim: int, *attackers: int, n: int = 0) -> list[tuple[int, ...]]:
    return [pilot(1000 + n, victim)] + [pilot(2000 + i + n, a) for i, a in enumerate(attackers)]


def test_two_sides_and_an_awox_does_not_split_an_alliance() -> None:
    kills = [kill(B, A, A, n=i) for i in range(10)] + [kill(A, B, B, n=i) for i in range(10)]
    kills += [kill(A, A, B, n=99)]  # one of A shot its own (an awox) beside B
    assert assign(kills) == [[A], [B]] or assign(kills) == [[B], [A]]


def test_a_third_party_that_shot_both_stays_apart() -> None:
    kills = [kill(B, A, n=i) for i in range(10)] + [kill(A, B, n=i) for i in range(10)]
    kills += [kill(A, C, n=i) for i in range(5)] + [kill(B, C, n=i) for i in range(5)]
    found = assign(kills)
    assert len(found) == 3 and [C] in found


def test_allies_with_a_few_blue_on_blue_shots_stay_together() -> None:
    kills = [kill(C, A, B, n=i) for i in range(20)]  # A and B shot C's ships together
    kills += [kill(A, C, n=i) for i in range(5)] + [kill(A, B, n=100)]  # and B once shot A
    found = assign(kills)
    assert sorted(map(sorted, found)) == [[A, B], [C]]


def test_an_alliance_that_only_died_joins_the_enemies_of_its_killers() -> None:
    kills = [kill(B, A, n=i) for i in range(10)] + [kill(A, B, n=i) for i in range(10)]
    kills += [kill(C, A, n=50 + i) for i in range(3)]  # C never fired
    found = assign(kills)
    assert any(sorted(side) == sorted([B, C]) for side in found)


def test_deterministic_and_moves_are_a_view() -> None:
    kills = [kill(B, A, n=i) for i in range(10)] + [kill(A, B, n=i) for i in range(10)]
    assert assign(kills) == assign(list(reversed(kills)))
    found = assign(kills)
    assert moved(found, {found[0][0]: 2}) == [[], sorted([found[0][0], *found[1]])]
    assert moved(found, {found[0][0]: 3})[2] == [found[0][0]]
    assert assign(kills) == found
