"""`python -m bench.fanout` runs end to end: Node's `ws` reference, this tree's server and the floor
(bench/floor_server.py), every subscriber getting every kill, in one run (quick sizes), with Node's
subscribers (the default) and with Python's."""

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
    args = [
        "--subscribers",
        "20",
        "--rate",
        "10",
        "--seconds",
        "1",
        "--loops",
        "asyncio,uvloop",
        "--burst",
        "2",
        "--floor",
    ]
    stdout, figures = run_bench("bench.fanout", args, tmp_path / "fanout.json", timeout=240)
    names = [row["name"] for row in figures["rows"]]
    assert names == [
        "Node ws, plain frame (reference)",
        "this tree, deflate, asyncio",
        "this tree, deflate, uvloop",
        "floor: the deflated frame written, nothing else",  # its frames inflate to the kills posted
    ]
    for row in figures["rows"]:
        assert row["delivered"] == row["expected"] == 20 * 10, row
        # CPU comes in /proc's 10 ms ticks: Node's or the floor's 200 sends may cost less than one.
        assert row["us"] > 0 if row["name"].startswith("this tree") else row["us"] >= 0, row
        assert 0 < row["p50_ms"] <= row["p99_ms"]
        # Node's clients also give each kill's first receipt: no later than its last.
        assert 0 < row["first_p50_ms"] <= row["first_p99_ms"] <= row["p99_ms"] + 1e-6, row
    assert "| Node ws, plain frame (reference) | 200/200 |" in stdout
    assert "Subscribers: 20 in 2 node processes" in stdout
    args = ["--subscribers", "20", "--rate", "10", "--seconds", "1", "--loops", "asyncio", "--clients", "python"]
    stdout, figures = run_bench("bench.fanout", args, tmp_path / "fanout-python.json", timeout=240)
    assert [row["delivered"] for row in figures["rows"]] == [200, 200]
    assert "Subscribers: 20 in 2 python processes" in stdout
