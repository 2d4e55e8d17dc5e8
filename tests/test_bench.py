"""The benchmark command runs end to end (quick mode) and prints every table it promises."""

from __future__ import annotations

from pathlib import Path

import pytest
from serverproc import run_bench


@pytest.mark.slow
def test_quick_bench_prints_every_table_and_delivers_everything(tmp_path: Path) -> None:
    stdout, figures = run_bench("bench", ["--quick"], tmp_path / "bench.json", timeout=180)
    titles = ("| cores |", "### Fan-out of real kills", "### Fan-out of a", "### Ingest", "### Memory", "### Start-up")
    for title in titles:
        assert title in stdout, stdout
    for row in figures["fanout"] + figures["big"]:
        assert row["delivered"] == row["expected"] > 0  # every subscriber got every kill
        assert 0 < row["p50"] <= row["p99"] <= row["max"]
    assert figures["ingest"]["floor_rate"] > 0
    assert all(run["stored_s"] > 0 for run in figures["ingest"]["http"])
    assert all(run["stored"] == run["kills"] for run in figures["ingest"]["import"])
    assert figures["memory"]["idle_rss"] > 0
