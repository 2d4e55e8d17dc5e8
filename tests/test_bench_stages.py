"""`python -m bench.stages` runs end to end at a small size: every stage of a kill's ingest
measured over real kills (the bench checks they were all written, inbox emptied, figures kept),
and the bound it prints is the floor over the stages' sum."""

from __future__ import annotations

from pathlib import Path

import pytest
from serverproc import run_bench

from bench.stages import COUNTED


def test_stages_add_up_to_the_bound_they_print(tmp_path: Path) -> None:
    stdout, figures = run_bench("bench.stages", ["--kills", "400"], tmp_path / "stages.json", timeout=120)
    per = figures["per_kill_us"]
    assert set(COUNTED) < set(per)
    assert all(us > 0 for us in per.values()), per
    assert figures["sum_us"] == pytest.approx(sum(per[name] for name in COUNTED))
    assert figures["bound"] == pytest.approx(figures["floor_us"] / figures["sum_us"])
    assert 0 < figures["bound"] < 1
    assert f"{figures['bound']:.3f}x the floor" in stdout
