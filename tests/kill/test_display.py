"""How numbers, security and items read on the page (killboard/kill/display.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from killboard.kill import display
from killboard.kill.staticdata import StaticData

ISK_CASES = [
    (0, "0"),
    (950, "950"),
    (999.6, "1k"),
    (12_500, "12.5k"),
    (12_549, "12.5k"),
    (340_200_000, "340.2m"),
    (7_000_000, "7m"),
    (999_960_000, "1b"),
    (1_250_000_000, "1.25b"),
    (1_000_000_000, "1b"),
    (53_812_345_678, "53.81b"),
    (1_400_000_000_000, "1.4t"),
    (-2_500_000, "-2.5m"),
]


@pytest.mark.parametrize(("value", "text"), ISK_CASES)
def test_isk_reads_like_players_write_it(value: float, text: str) -> None:
    assert display.isk(value) == text


@pytest.mark.parametrize(
    ("sec", "level"), [(1.0, "10"), (0.5, "05"), (0.45, "05"), (0.1, "01"), (0.0, "00"), (-0.4, "00"), (None, "")]
)
def test_security_level_is_the_colour_step(sec: float | None, level: str) -> None:
    assert display.security_level(sec) == level


def test_relative_time() -> None:
    now = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)
    assert display.ago("2026-01-02T11:59:30Z", now) == "just now"
    assert display.ago("2026-01-02T11:55:00Z", now) == "5 min ago"
    assert display.ago("2026-01-02T09:00:00Z", now) == "3 h ago"
    assert display.ago("2025-12-30T12:00:00Z", now) == "3 d ago"
    assert display.ago("2023-01-01T00:00:00Z", now) == "3 y ago"
    assert display.ago("not a time", now) == ""
    assert display.utc_text("2026-01-02T11:55:00Z") == "2026-01-02 11:55:00 UTC"


def test_attackers_final_blow_first_then_damage() -> None:
    attackers = [
        {"character_id": 1, "damage_done": 50, "final_blow": False},
        {"character_id": 2, "damage_done": 10, "final_blow": True},
        {"character_id": 3, "damage_done": 900, "final_blow": False},
    ]
    assert [a["character_id"] for a in display.attackers_in_order(attackers)] == [2, 3, 1]


def test_items_grouped_by_slot_in_fitting_order(static: StaticData) -> None:
    # Flags as ESI sends them: 27 HiSlot0, 19 MedSlot0, 11 LoSlot0, 92 RigSlot0, 125 SubSystem0,
    # 87 DroneBay, 5 Cargo, 89 Implant; a container in cargo with contents.
    items = [
        {
            "type_id": 3,
            "name": {"en": "Cargo thing"},
            "flag": 5,
            "qty_dropped": 2,
            "value": 10.0,
            "items": [{"type_id": 4, "name": {"en": "Inside"}, "flag": 5, "qty_destroyed": 1, "value": 5.0}],
        },
        {"type_id": 2, "name": {"en": "Drone"}, "flag": 87, "qty_destroyed": 5, "value": 1.0},
        {"type_id": 1, "name": {"en": "Gun"}, "flag": 28, "qty_destroyed": 1, "value": 100.0},
        {"type_id": 5, "name": {"en": "Rig"}, "flag": 92, "qty_dropped": 1, "value": 7.0},
        {"type_id": 6, "name": {"en": "Plate"}, "flag": 11, "qty_dropped": 1, "value": 1.0},
        {"type_id": 7, "name": {"en": "Booster"}, "flag": 19, "qty_dropped": 1, "value": 1.0},
        {"type_id": 8, "name": {"en": "Sub"}, "flag": 125, "qty_dropped": 1, "value": 1.0},
        {"type_id": 9, "name": {"en": "Implant"}, "flag": 89, "qty_destroyed": 1, "value": 1.0},
        {"type_id": 10, "name": {"en": "Odd"}, "flag": 134, "qty_destroyed": 1, "value": 1.0},
        {"type_id": 11, "name": {"en": "Old"}, "flag": 0, "qty_destroyed": 1, "value": 1.0},
    ]
    groups = display.slot_groups(items, static.flags)
    labels = [g.label for g in groups]
    assert labels == [
        "High slots",
        "Mid slots",
        "Low slots",
        "Rigs",
        "Subsystems",
        "Drone bay",
        "Implants",
        "Cargo",
        "Specialized Asteroid Hold",
        "Slot not recorded",  # flag 0, as killmails from before slots were recorded have
    ]
    cargo = groups[labels.index("Cargo")]
    assert [(r.name, r.depth) for r in cargo.rows] == [("Cargo thing", 0), ("Inside", 1)]
    assert cargo.total == 25.0
