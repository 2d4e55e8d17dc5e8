"""`make demo`: the bundled real fights imported into a database of their own and served, twice
in a row (the second import skips every kill), through the real Makefile and a real server."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from battlefights import FIGHTS, fight
from serverproc import free_port

from killboard.config import PROJECT_ROOT

pytestmark = [
    pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed"),
    pytest.mark.skipif(
        not (PROJECT_ROOT / ".venv" / "bin" / ".installed").exists(),
        reason="no .venv made by the Makefile here (make test makes it)",
    ),
]
KILLS = 877  # the three fights (795) and the 82 kills of tests/data/killmails


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def serve_demo(db: Path, port: int) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """`make demo` until its server answers with every kill stored: (make, /health)."""
    make = subprocess.Popen(
        ["make", "-s", "demo", f"DEMO_DB={db}", f"ARGS=--no-upstream --port {port}"],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its server is in the same group: stopped together
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert make.poll() is None, make.communicate()[0]
        try:
            health = get(f"http://127.0.0.1:{port}/health")
        except OSError:
            time.sleep(0.3)
            continue
        if health["kills"] == KILLS:
            return make, health
        time.sleep(0.3)
    stop(make)
    raise AssertionError("make demo did not serve its kills in 90 s")


def stop(make: subprocess.Popen[str]) -> str:
    os.killpg(make.pid, signal.SIGTERM)
    out, _ = make.communicate(timeout=30)
    return out


def test_make_demo_serves_the_real_fights_and_runs_again(tmp_path: Path) -> None:
    db = tmp_path / "demo.sqlite3"
    port = free_port()
    make, health = serve_demo(db, port)
    try:
        battles = get(f"http://127.0.0.1:{port}/api/battles")["battles"]
        want = sorted((len(fight(system)), [int(system)]) for system in FIGHTS)
        assert sorted((b["kill_count"], b["system_ids"]) for b in battles) == want
    finally:
        first = stop(make)
    assert f"imported {KILLS}, duplicates 0, rejected 0" in first, first
    make, health = serve_demo(db, port)
    again = stop(make)
    assert f"imported 0, duplicates {KILLS}, rejected 0" in again, again
    assert health["kills"] == KILLS
