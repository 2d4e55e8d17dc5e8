"""Installed as a tool: the wheel carries every subpackage, the static data, templates and static
files; `killboard` runs every subcommand from outside a clone and keeps its database in the
per-user data directory (a real `pipx install`, a real server subprocess)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest
from serverproc import free_port

import killboard
from killboard.config import PROJECT_ROOT, Config, default_db_path, from_env, resource_dir

PYPROJECT = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())


def test_every_subpackage_ships() -> None:
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(PROJECT_ROOT).parts)
        for init in (PROJECT_ROOT / "killboard").rglob("__init__.py")
    }
    assert found - listed == set(), "add the new subpackage to [tool.setuptools] packages in pyproject.toml"
    mapped = PYPROJECT["tool"]["setuptools"]["package-dir"]
    assert {name: folder for name, folder in mapped.items()} == {
        "killboard._data": "data",
        "killboard._templates": "templates",
        "killboard._static": "static",
    }


def test_a_clone_uses_its_own_folders(tmp_path: Path) -> None:
    assert resource_dir("data") == PROJECT_ROOT / "data"
    assert resource_dir("templates") == PROJECT_ROOT / "templates"
    # In a clone the database stays where `make run` always put it, whatever XDG says.
    env = {"XDG_DATA_HOME": str(tmp_path)}
    assert default_db_path(env) == PROJECT_ROOT / "data" / "killboard.sqlite3"
    assert from_env(env).db_path == PROJECT_ROOT / "data" / "killboard.sqlite3"
    assert Config().data_dir == PROJECT_ROOT / "data"


def test_python_m_killboard_and_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "killboard", "--version"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"killboard {killboard.__version__}"
    usage = subprocess.run(
        [sys.executable, "app.py", "nonsense"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60
    )
    assert usage.returncode == 2
    assert usage.stderr.startswith("usage: python app.py")


@pytest.mark.parametrize("main", ["runpy.run_path('app.py', run_name='__mp_main__')", "import killboard.__main__"])
def test_the_main_module_run_again_in_a_worker_does_not_load_the_server(main: str) -> None:
    """multiprocessing's spawn runs the parent's main module again in the worker process
    (`app.py`, or `killboard.__main__` for `python -m killboard` and the console script): it
    must not import the server there, only what the worker needs."""
    code = f"import json, runpy, sys; {main}; print(json.dumps(sorted(m for m in sys.modules if 'killboard.' in m)))"
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout)
    assert loaded == ["killboard.__main__"], loaded


def _copy_sources(dest: Path) -> Path:
    """What the wheel is built from, copied: pip's build writes build/ and *.egg-info beside them."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(PROJECT_ROOT / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.sqlite3*", "*.log")
    for name in ("killboard", "data", "templates", "static"):
        shutil.copytree(PROJECT_ROOT / name, dest / name, ignore=ignore)
    return dest


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read().decode()


@pytest.mark.slow
def test_pipx_installs_it_and_it_runs_outside_a_clone(tmp_path: Path) -> None:
    """README's `pipx install .`, run for real in a copy of the sources (pipx builds the wheel in
    an isolated environment and installs it in a venv of its own), into a PIPX_HOME of the test's."""
    src = _copy_sources(tmp_path / "src")
    pipx_env = {
        **os.environ,
        "PIPX_HOME": str(tmp_path / "pipx"),
        "PIPX_BIN_DIR": str(tmp_path / "bin"),
        "PIPX_MAN_DIR": str(tmp_path / "man"),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    # The dependencies come from the ranges in pyproject.toml, held to requirements.txt's pins.
    installed = subprocess.run(
        [sys.executable, "-m", "pipx", "install", ".", "--pip-args", f"-c {PROJECT_ROOT / 'requirements.txt'}"],
        cwd=src,
        env=pipx_env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert "killboard" in installed.stdout and (tmp_path / "bin" / "killboard").exists(), installed.stdout
    venv = tmp_path / "pipx" / "venvs" / "killboard"
    home = tmp_path / "home"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {
        "PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin",  # pipx's bin directory, not the venv's
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "xdg"),
        "KILLBOARD_UPSTREAM": "off",
        "KILLBOARD_LOG_LEVEL": "WARNING",
    }

    def killboard_cmd(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["killboard", *args], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)

    version = killboard_cmd("--version")
    assert version.stdout.strip() == f"killboard {killboard.__version__}", version.stderr
    # The installed copy, not this clone, answers.
    where = subprocess.run(
        [venv / "bin" / "python", "-c", "import killboard.config as c; print(c.resource_dir('data'))"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert str(venv) in where.stdout and "_data" in where.stdout, where.stderr
    helped = killboard_cmd("--help")
    for command in ("import", "edge", "backup", "check", "webhooks"):
        assert command in helped.stdout

    kills = tmp_path / "kills"  # the 82 real killmails, without their PROVENANCE.json
    kills.mkdir()
    for path in (PROJECT_ROOT / "tests" / "data" / "killmails").glob("[0-9]*.json"):
        shutil.copy(path, kills)
    imported = killboard_cmd("import", str(kills))
    assert imported.returncode == 0, imported.stderr
    assert "imported 82" in imported.stdout
    db = home / "xdg" / "killboard" / "killboard.sqlite3"
    assert db.is_file()  # the per-user data directory, created on first use
    assert list(elsewhere.iterdir()) == []  # nothing written where the command was run
    checked = killboard_cmd("check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    backed = killboard_cmd("backup", str(tmp_path / "copy.sqlite3"))
    assert backed.returncode == 0, backed.stderr

    port = free_port()
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        server = subprocess.Popen(["killboard", "--port", str(port)], cwd=elsewhere, env=env, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, log.read_text()[-2000:]
            try:
                status, body = _get(f"http://127.0.0.1:{port}/health")
                break
            except OSError:
                assert time.monotonic() < deadline, "the installed server did not answer /health in 30 s"
                time.sleep(0.2)
        assert status == 200 and '"ok"' in body
        status, page = _get(f"http://127.0.0.1:{port}/")
        assert status == 200 and "<html" in page.lower()
        status, css = _get(f"http://127.0.0.1:{port}/static/killboard.css")  # static files ship too
        assert status == 200 and css
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert os.listdir(elsewhere) == []
