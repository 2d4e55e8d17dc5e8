"""`python -m bench.compress` runs end to end: every library's output inflates with stdlib zlib
(the bench stops otherwise) and it prints the ratios the docs quote."""

from __future__ import annotations

import subprocess
import sys

import pytest

from killboard.config import PROJECT_ROOT


@pytest.mark.slow
def test_compress_bench_prints_ratios_to_stdlib_zlib() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench.compress", "--reps", "1"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    for title in ("all languages", "lang=en", "window 9 bits", "stored source documents", "killboard's own calls"):
        assert title in out
    # The stdlib rows are the baselines: 1.00x of themselves.
    assert "| zlib | 6 |" in out and "| 1.00x | 1.000x |" in out
    calls = {
        line.split("|")[1].strip(): line
        for line in out.splitlines()
        if line.startswith(("| wire.", "| bus writer")) or "codec.pack" in line
    }
    assert len(calls) == 4, calls
    # The participant index's pilot rows, against the stdlib zlib 9 they were packed with before.
    assert "participants.pack" in out
    assert sum(1 for line in out.splitlines() if line.startswith(("| 82 real kills |", "| 10,000 attackers |"))) == 2
