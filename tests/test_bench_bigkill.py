"""`python -m bench.bigkill` runs end to end at a small size: a fleet fight posted to a real
server (through its worker process), delivered to a live subscriber, read back, and both probes
(/health, and a WebSocket ping for the loop's own stall) answered throughout."""

from __future__ import annotations

from pathlib import Path

import pytest
from serverproc import run_bench


@pytest.mark.slow
def test_bigkill_delivers_a_fleet_fight_and_probes_the_loop(tmp_path: Path) -> None:
    stdout, figures = run_bench("bench.bigkill", ["--sizes", "600"], tmp_path / "bigkill.json", timeout=120)
    [row] = figures["rows"]
    assert row["tree"] == "this" and row["attackers"] == 600
    assert 0.09 < row["body_mb"] < 0.2  # 600 real attackers, ~180 bytes each
    assert 0 < row["delivered_s"] < 60
    assert row["health_ms"] > 0 and row["pong_ms"] > 0 and row["no_kill_health_ms"] > 0
    assert "this             600" in stdout
