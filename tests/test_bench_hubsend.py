"""`python -m bench.hubsend` runs end to end at small sizes: each tree in a process of its own,
every socket written every kill, what that cost the loop's thread, and its longest turn."""

from __future__ import annotations

from pathlib import Path

import pytest
from serverproc import run_bench

from killboard.config import PROJECT_ROOT


@pytest.mark.slow
def test_hubsend_measures_both_trees_and_writes_every_kill(tmp_path: Path) -> None:
    args = ["--sockets", "20", "--kills", "5", "--rounds", "1", "--stall-kills", "2", "--burst", "3"]
    args += ["--baseline", str(PROJECT_ROOT)]
    stdout, figures = run_bench("bench.hubsend", args, tmp_path / "hubsend.json", timeout=120)
    assert [row["name"] for row in figures["rows"]] == ["this tree", f"baseline {PROJECT_ROOT}"]
    for row in figures["rows"]:
        assert row["deliveries"] == 20 * 5
        assert row["bytes"] > 20 * 5 * 1000, row  # deflated real kills: several KB each
        assert row["user_us"] + row["system_us"] > 0
        assert 0 < row["stall_cpu_ms"] <= row["stall_ms"] + 1, row  # CPU in a turn <= its wall time
        assert row["burst_publish_cpu_ms"] > 0 and row["burst_stall_ms"] > 0, row
    assert "| this tree | 1 |" in stdout
