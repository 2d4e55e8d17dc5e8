"""`python -m bench.solokill` runs end to end at small sizes: both trees, every kill stored, and
the CPU and thread hand-offs of each read from /proc."""

from __future__ import annotations

from pathlib import Path

import pytest
from serverproc import run_bench

from killboard.config import PROJECT_ROOT


@pytest.mark.slow
def test_solokill_measures_both_trees(tmp_path: Path) -> None:
    args = ["--kills", "5", "--rate", "20", "--rounds", "1", "--baseline", str(PROJECT_ROOT)]
    stdout, figures = run_bench("bench.solokill", args, tmp_path / "solo.json", timeout=120)
    assert [row["name"] for row in figures["rows"]] == ["this tree", f"baseline {PROJECT_ROOT}"]
    for row in figures["rows"]:
        assert row["kills"] == 5
        assert row["switches"] > 0  # a stored kill hands work to SQLite's thread at least once
    assert "ratio this tree / baseline:" in stdout
