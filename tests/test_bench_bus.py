"""`python -m bench.bus --quick` runs end to end: every scenario delivers everything and reports
CPU per process and, with edges, the writer-to-edge lag."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from serverproc import run_bench


@pytest.mark.slow
def test_quick_bus_bench_delivers_everything(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (Debian package redis-server; CI installs it)")
    stdout, rows = run_bench("bench.bus", ["--quick"], tmp_path / "bus.json", timeout=240)
    assert [r["scenario"] for r in rows] == ["one process", "writer + 1 edge", "writer + 2 edges"]
    for row in rows:
        assert row["delivered"] == row["expected"] > 0
        assert 0 < row["p50"] <= row["p99"]
    assert set(rows[2]["cpu"]) == {"writer", "edge 1", "edge 2", "redis-server"}
    assert rows[0]["lag_mean"] is None and rows[1]["lag_mean"] > 0 and rows[2]["lag_max"] >= rows[2]["lag_mean"]
    assert "| writer + 2 edges |" in stdout
