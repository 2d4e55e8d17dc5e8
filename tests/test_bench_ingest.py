"""`python -m bench.ingest` runs end to end at small sizes: both trees alternately, every kill
stored and broadcast, the ratio to the floor of the same run, the worker's CPU counted."""

from __future__ import annotations

from pathlib import Path

import pytest
from serverproc import run_bench

from killboard.config import PROJECT_ROOT


@pytest.mark.slow
def test_ingest_compares_both_trees_against_the_floor(tmp_path: Path) -> None:
    args = ["--kills", "600", "--pairs", "1", "--baseline", str(PROJECT_ROOT)]
    stdout, figures = run_bench("bench.ingest", args, tmp_path / "ingest.json", timeout=240)
    assert [row["name"] for row in figures["rows"]] == ["this tree", "baseline"]
    for row in figures["rows"]:
        assert row["stored"] == 600
        assert row["ratio"] == pytest.approx(row["broadcast_rate"] / row["floor_rate"])
        assert 0 < row["ratio"] < 1 and row["cpu_per_1000"] > 0
        assert 0 < row["own_cpu_per_1000"] <= row["cpu_per_1000"]
    assert "| this tree |" in stdout and "| baseline |" in stdout
