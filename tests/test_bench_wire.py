"""bench/wire.py runs end to end with small numbers: every kind of subscriber gets every kill,
deflate clients get fewer bytes than plain ones and `lang=en` fewer still."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from killboard.config import PROJECT_ROOT


@pytest.mark.slow
def test_wire_bench_smoke(tmp_path: Path) -> None:
    results = tmp_path / "wire.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.wire",
            "--only",
            "populations,memory",
            "--subscribers",
            "30",
            "--seconds",
            "1",
            "--memory",
            "100",
            "--json",
            str(results),
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "### Bytes and server CPU per delivery" in done.stdout and "### Idle memory" in done.stdout
    figures = json.loads(results.read_text())
    by_name = {p["name"]: p["runs"][0] for p in figures["populations"]}
    for run in by_name.values():
        assert run["delivered"] == run["expected"] > 0
    sizes = by_name["mixed"]["bytes_per_delivery"]
    assert sizes["deflate+en"] * 2 < sizes["deflate"] and sizes["deflate"] * 3 < sizes["plain"]
    assert figures["memory"]["per_socket"] > 0
