"""`python -m bench.fanout` runs end to end: Node's `ws` reference and this tree's server, every
subscriber getting every kill, in one run (quick sizes)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from serverproc import run_bench

from killboard.config import PROJECT_ROOT


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("node") is None, reason="needs node")
def test_fanout_compares_with_node_and_delivers_everything(tmp_path: Path) -> None:
    if not (PROJECT_ROOT / "tests" / "node" / "node_modules" / "ws").is_dir():
        pytest.skip("npm ci --prefix tests/node first")
    args = ["--subscribers", "20", "--rate", "10", "--seconds", "1", "--loops", "asyncio,uvloop", "--burst", "2"]
    stdout, figures = run_bench("bench.fanout", args, tmp_path / "fanout.json", timeout=240)
    names = [row["name"] for row in figures["rows"]]
    assert names == ["Node ws, plain frame (reference)", "this tree, deflate, asyncio", "this tree, deflate, uvloop"]
    for row in figures["rows"]:
        assert row["delivered"] == row["expected"] == 20 * 10, row
        assert row["us"] > 0 and 0 < row["p50_ms"] <= row["p99_ms"]
    assert "| Node ws, plain frame (reference) | 200/200 |" in stdout
