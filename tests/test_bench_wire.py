"""bench/wire.py runs end to end with small numbers: every kind of subscriber gets every kill,
deflate clients get fewer bytes than plain ones and `lang=en` fewer still."""

from __future__ import annotations

from pathlib import Path

import pytest
from serverproc import run_bench


@pytest.mark.slow
def test_wire_bench_smoke(tmp_path: Path) -> None:
    args = ["--only", "populations,memory", "--subscribers", "30", "--seconds", "1", "--memory", "100"]
    stdout, figures = run_bench("bench.wire", args, tmp_path / "wire.json", timeout=180)
    assert "### Bytes and server CPU per delivery" in stdout and "### Idle memory" in stdout
    by_name = {p["name"]: p["runs"][0] for p in figures["populations"]}
    for run in by_name.values():
        assert run["delivered"] == run["expected"] > 0
    sizes = by_name["mixed"]["bytes_per_delivery"]
    assert sizes["deflate+en"] * 2 < sizes["deflate"] and sizes["deflate"] * 3 < sizes["plain"]
    assert figures["memory"]["per_socket"] > 0
