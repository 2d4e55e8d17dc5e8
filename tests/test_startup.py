"""Bad start-up: an unusable database or a port the server cannot take gives one line on stderr
and exit 1, at once (a real `python app.py` subprocess each time, real damaged files)."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from serverproc import ServerProcess, free_port, import_real_kills, listens

from killboard.config import PROJECT_ROOT

# A start that fails must end long before this; a hang (aiosqlite's thread kept the process
# alive after the error) fails the test instead of the run.
EXIT_WITHIN = 20.0
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
NOBODY = 65534
# As root, the server drops to nobody after its interpreter and every module are loaded, so it
# does not matter that nobody cannot reach the interpreter or this clone (under /root or a 0700
# `mktemp -d`): what nobody must read at run time (the package, data/) is copied where it can.
AS_NOBODY = """\
import encodings.idna, importlib, os, pkgutil, sys  # idna: getaddrinfo loads it lazily
sys.path.insert(0, os.getcwd())
import killboard
from killboard.cli import main
for module in pkgutil.walk_packages(killboard.__path__, "killboard."):
    importlib.import_module(module.name)
os.setgroups([])
os.setgid({uid})
os.setuid({uid})
sys.exit(main(sys.argv[1:], prog="python app.py"))
"""


def start(
    args: list[str], env: dict[str, str] | None = None, as_nobody: bool = False, copy: Path | None = None
) -> tuple[int, str]:
    """Run `python app.py ARGS` to its end; (exit status, stderr). `as_nobody`: from `copy` (a
    readable copy of the server), as root turned nobody."""
    command = [sys.executable, "app.py", *args]
    if as_nobody:
        assert copy is not None
        command = [sys.executable, "-c", AS_NOBODY.format(uid=NOBODY), *args]
    proc = subprocess.run(
        command,
        cwd=copy if as_nobody else PROJECT_ROOT,
        env={**os.environ, "KILLBOARD_UPSTREAM": "off", "KILLBOARD_LOG_LEVEL": "WARNING", **(env or {})},
        capture_output=True,
        timeout=EXIT_WITHIN,
        text=True,
    )
    return proc.returncode, proc.stderr


def assert_one_line(status: int, stderr: str, *expected: str) -> None:
    assert status == 1, stderr
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    for text in expected:
        assert text in lines[0]


@pytest.fixture(scope="module")
def real_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database of the 82 bundled kills, written by the real import."""
    return import_real_kills(tmp_path_factory.mktemp("real") / "kb.sqlite3")


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A folder everyone can reach (pytest's own tmp folders are private to their owner), for
    the tests whose server runs as nobody when we are root."""
    path = Path(tempfile.mkdtemp(prefix="killboard-startup-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        for folder in (path, *(p for p in path.rglob("*") if p.is_dir())):
            folder.chmod(0o755)  # the tests lock folders, even against their owner
        shutil.rmtree(path)


@pytest.fixture(scope="module")
def server_copy() -> Iterator[Path | None]:
    """The server's package and the files it reads at start, copied where nobody can read them
    (a few MB); None when we are not root (the server then runs as us, from the clone)."""
    if not IS_ROOT:
        yield None
        return
    path = Path(tempfile.mkdtemp(prefix="killboard-server-"))
    ignore = shutil.ignore_patterns("__pycache__", "*.sqlite3*")
    for name in ("killboard", "data", "templates", "static"):
        shutil.copytree(PROJECT_ROOT / name, path / name, ignore=ignore)
    for item in (path, *path.rglob("*")):
        item.chmod(item.stat().st_mode | stat.S_IROTH | (stat.S_IXOTH if item.is_dir() else 0))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def serve(db: Path, *extra: str) -> list[str]:
    return ["--port", str(free_port()), "--db", str(db), *extra]


def test_a_text_file_as_database(tmp_path: Path) -> None:
    db = tmp_path / "notes.txt"
    db.write_text("not a database\n" * 100)
    assert_one_line(*start(serve(db)), str(db), "file is not a database")
    assert db.read_text() == "not a database\n" * 100  # nothing written over it


def test_a_directory_as_database(tmp_path: Path) -> None:
    assert_one_line(*start(serve(tmp_path)), str(tmp_path), "is a directory")


@pytest.mark.parametrize("keep", [10_000, 100_000], ids=["header-only", "half"])
def test_a_truncated_database(tmp_path: Path, real_db: Path, keep: int) -> None:
    db = tmp_path / "kb.sqlite3"
    db.write_bytes(real_db.read_bytes()[:keep])
    assert_one_line(*start(serve(db)), str(db), "malformed")


def test_a_garbled_database(tmp_path: Path, real_db: Path) -> None:
    db = tmp_path / "kb.sqlite3"
    data = bytearray(real_db.read_bytes())
    data[:100] = bytes(range(100))  # the header: no longer "SQLite format 3"
    db.write_bytes(bytes(data))
    assert_one_line(*start(serve(db)), str(db), "not a database")


# Modes that refuse everyone but root; as root the server runs as nobody, so they refuse it too.


def test_a_database_in_a_read_only_directory(open_dir: Path, real_db: Path, server_copy: Path | None) -> None:
    folder = open_dir / "ro"
    folder.mkdir()
    db = folder / "kb.sqlite3"
    shutil.copy(real_db, db)
    db.chmod(0o644)
    folder.chmod(0o555)  # readable, not writable: SQLite cannot make its -wal file beside it
    assert_one_line(*start(serve(db), as_nobody=IS_ROOT, copy=server_copy), str(db), "readonly", "writable")


def test_a_read_only_database_file(open_dir: Path, real_db: Path, server_copy: Path | None) -> None:
    folder = open_dir / "rw"
    folder.mkdir()
    folder.chmod(0o777)
    db = folder / "kb.sqlite3"
    shutil.copy(real_db, db)
    db.chmod(0o444)
    assert_one_line(*start(serve(db), as_nobody=IS_ROOT, copy=server_copy), str(db), "readonly")


def test_a_database_path_that_cannot_be_created(open_dir: Path, server_copy: Path | None) -> None:
    locked = open_dir / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    db = locked / "new" / "kb.sqlite3"
    assert_one_line(*start(serve(db), as_nobody=IS_ROOT, copy=server_copy), str(db), "Permission denied")


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_a_port_in_use(tmp_path: Path, taken_port: int) -> None:
    status, stderr = start(["--port", str(taken_port), "--db", str(tmp_path / "kb.sqlite3")])
    assert_one_line(status, stderr, f"cannot listen on 127.0.0.1:{taken_port}", "already in use")


@pytest.mark.parametrize("port", ["99999", "-1", "0"])
def test_a_port_out_of_range(tmp_path: Path, port: str) -> None:
    status, stderr = start(["--port", port, "--db", str(tmp_path / "kb.sqlite3")])
    assert_one_line(status, stderr, "--port must be between 1 and 65,535", port)
    assert not (tmp_path / "kb.sqlite3").exists()  # refused before anything was opened


def _unprivileged_port_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    except (OSError, ValueError):
        return 1024  # the classic rule where the setting is not there


@pytest.mark.skipif(
    _unprivileged_port_start() <= 80, reason="this kernel lets every user bind port 80 (ip_unprivileged_port_start)"
)
def _has_net_bind_service() -> bool:
    """Whether this (non-root) process may bind low ports anyway: CAP_NET_BIND_SERVICE is bit 10."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) & (1 << 10))
    return False


@pytest.mark.skipif(not IS_ROOT and _has_net_bind_service(), reason="this user holds CAP_NET_BIND_SERVICE")
def test_a_privileged_port_without_privilege(open_dir: Path, server_copy: Path | None) -> None:
    folder = open_dir / "db"
    folder.mkdir()
    folder.chmod(0o777)
    status, stderr = start(["--port", "80", "--db", str(folder / "kb.sqlite3")], as_nobody=IS_ROOT, copy=server_copy)
    assert_one_line(status, stderr, "cannot listen on 127.0.0.1:80", "permission denied", "CAP_NET_BIND_SERVICE")


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("KILLBOARD_RETENTION_DAYS", "-5", "KILLBOARD_RETENTION_DAYS must be between 0 and"),
        ("KILLBOARD_WS_MAX_CLIENTS", "-1", "KILLBOARD_WS_MAX_CLIENTS must be between 0 and"),
        ("KILLBOARD_WS_CONTROL_RATE", "nan", "KILLBOARD_WS_CONTROL_RATE must be a finite number"),
        ("KILLBOARD_WS_CONTROL_RATE", "inf", "KILLBOARD_WS_CONTROL_RATE must be a finite number"),
        ("KILLBOARD_WS_REPLAY_MAX", "lots", "KILLBOARD_WS_REPLAY_MAX must be an integer"),
        ("KILLBOARD_PORT", "70000", "KILLBOARD_PORT must be between 1 and 65,535"),
        ("KILLBOARD_QUEUE_BYTES", "64MB", "KILLBOARD_QUEUE_BYTES must be an integer"),
        ("KILLBOARD_QUEUE_BYTES", "1000", "KILLBOARD_QUEUE_BYTES must be between 1,048,576 and"),
        ("KILLBOARD_QUEUE_BYTES", "2000000", "KILLBOARD_QUEUE_BYTES must not be below the largest body"),
    ],
)
def test_bad_numeric_settings(tmp_path: Path, name: str, value: str, expected: str) -> None:
    status, stderr = start(["--db", str(tmp_path / "kb.sqlite3")], env={name: value})
    assert_one_line(status, stderr, expected)


async def test_a_test_server_whose_port_was_taken_moves_to_another(tmp_path: Path) -> None:
    """tests/serverproc.py: its free port was taken by another server before it bound it (two
    suites at once): that server answered /health, and a fuzz test posted to it. Now the answer
    counts only from the process that holds the port, and a taken port is traded for another."""
    other = ServerProcess(tmp_path / "other.sqlite3")
    ours = ServerProcess(tmp_path / "ours.sqlite3")
    try:
        await other.start()
        ours.port = other.port  # as if the other had taken it in between
        await ours.start()
        assert ours.port != other.port
        assert ours.proc is not None and listens(ours.proc.pid, ours.port)
        assert other.proc is not None and not listens(other.proc.pid, ours.port)
        assert "address already in use" in ours.log.read_text()
    finally:
        ours.stop()
        other.stop()
