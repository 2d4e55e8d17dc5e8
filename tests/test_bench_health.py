"""`python -m bench.health` runs end to end at a small size: both trees, every /health answered,
the hand-offs and CPU of each read from /proc."""

from __future__ import annotations

import subprocess
import sys

import pytest

from killboard.config import PROJECT_ROOT


@pytest.mark.slow
def test_health_bench_measures_both_trees() -> None:
    args = ["--requests", "20", "--rounds", "1", "--baseline", str(PROJECT_ROOT)]
    out = subprocess.run(
        [sys.executable, "-m", "bench.health", *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=180,
    ).stdout
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith(("| this tree", "| baseline"))]
    assert [r[0].strip() for r in rows] == ["this tree (1)", f"baseline {PROJECT_ROOT} (1)"]
    for row in rows:
        switches, cpu, median, p99 = (float(cell) for cell in row[1:])
        assert cpu >= 0
        assert switches > 0  # /health hands its read to SQLite's thread
        assert 0 < median <= p99
