"""`python app.py backup DEST` and `python app.py check`: consistent copies and health checks of
the database, safe to run while the server is writing to it.

Plain sqlite3 (no event loop): these are one-off jobs for cron and operators.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import ujson
from tqdm import tqdm

from .. import config as settings
from ..kill import codec
from .schema import MIGRATIONS, PRUNED_KILLMAIL_ID, PRUNED_SEQ

EXIT_OK = 0
EXIT_DAMAGED = 1
EXIT_USAGE = 2

Progress = Callable[[int, int], None]


class ToolError(Exception):
    """An expected failure (missing file, not a database): one clear line, no stack trace."""


def missing(path: Path, command: str) -> bool:
    """For a command that works on the database there is (a rebuild, a test post): whether
    there is none at `path`, said in one line on stderr. Opening it would make an empty one, so
    a mistyped --db reported success on a new, empty file."""
    if path.is_file():
        return False
    print(f"{command}: no database at {path}", file=sys.stderr)
    return True


@contextmanager
def _open(path: Path) -> Iterator[sqlite3.Connection]:
    if not path.is_file():
        raise ToolError(f"no database at {path}")
    # Not read-only: a WAL database needs its -shm file, which a read-only open cannot create.
    with closing(sqlite3.connect(path, isolation_level=None, timeout=10)) as db:
        yield db


def backup(source: Path, dest: Path, progress: Progress | None = None, step_pages: int = 1024) -> Path:
    """Copy `source` to `dest` (a file, or a directory to put a timestamped file in) with SQLite's
    online backup API. Returns the path written.

    The copy is one snapshot: a read transaction is held on the source for the whole run. Without
    it, every commit by the server restarts the backup from the first page (measured: thousands of
    restarts under steady ingest); with it, the server keeps writing to the WAL meanwhile.
    The copy is written beside the target, checked, then renamed into place.
    """
    if dest.is_dir():
        dest = dest / f"killboard-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.sqlite3"
    partial = dest.with_name(dest.name + ".partial")
    partial.unlink(missing_ok=True)
    with _open(source) as src:
        src.execute("BEGIN")
        src.execute("SELECT count(*) FROM sqlite_master").fetchone()  # pins the snapshot
        try:
            with closing(sqlite3.connect(partial, isolation_level=None)) as dst:
                src.backup(
                    dst, pages=step_pages, progress=lambda _s, left, total: progress and progress(total - left, total)
                )
                # A standalone file: no WAL to carry around, and it opens read-only anywhere.
                dst.execute("PRAGMA journal_mode=DELETE")
                result = dst.execute("PRAGMA quick_check").fetchone()
                if result is None or result[0] != "ok":
                    raise ToolError(f"the copy failed its check: {result}")
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        finally:
            src.execute("COMMIT")
    with partial.open("rb") as f:
        os.fsync(f.fileno())
    os.replace(partial, dest)
    return dest


@dataclass
class Report:
    """What `check` found: facts for the operator and problems that mean damage."""

    facts: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check(path: Path, quick: bool = False) -> Report:
    """Integrity check, schema version, counts, and (unless quick) that every kill decodes."""
    report = Report()
    with _open(path) as db:
        try:
            _check(db, path, quick, report)
        except sqlite3.DatabaseError as exc:
            report.problems.append(f"SQLite: {exc}")
    return report


def _check(db: sqlite3.Connection, path: Path, quick: bool, report: Report) -> None:
    rows = [r[0] for r in db.execute("PRAGMA quick_check" if quick else "PRAGMA integrity_check")]
    if rows != ["ok"]:
        report.problems.extend(f"integrity: {r}" for r in rows[:20])
        if len(rows) > 20:
            report.problems.append(f"integrity: ... and {len(rows) - 20} more")
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        report.problems.append(f"schema version {version} is newer than this program knows ({len(MIGRATIONS)})")
    elif version < len(MIGRATIONS):
        report.facts.append(f"schema version {version}; the server migrates it to {len(MIGRATIONS)} on start")
    else:
        report.facts.append(f"schema version {version} (current)")
    if version < 1:
        report.problems.append("no killboard tables: is this the right file?")
        return
    kills, oldest, newest = db.execute("SELECT count(*), min(kill_time), max(kill_time) FROM kills").fetchone()
    inbox = db.execute("SELECT count(*) FROM inbox").fetchone()[0]
    names = db.execute("SELECT count(*) FROM names").fetchone()[0]
    size = sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())
    report.facts.append(f"kills {kills}, inbox {inbox} (acknowledged, not yet processed), names {names}")
    if kills:
        report.facts.append(f"kill times {_iso(oldest)} .. {_iso(newest)}; {size / kills:.0f} bytes on disk per kill")
    state = dict(db.execute("SELECT key, value FROM state WHERE key IN (?, ?)", (PRUNED_SEQ, PRUNED_KILLMAIL_ID)))
    if state:
        report.facts.append(f"retention has pruned kills up to seq {state.get(PRUNED_SEQ, '0')}")
    report.facts.append(f"size {size / 2**20:.1f} MiB (database + WAL)")
    has_codecs = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'dictionaries'").fetchone()
    if quick or not has_codecs:
        return
    # The dictionary is keyed by its own id, not by the codec id (both happen to be 1 today).
    row = db.execute("SELECT data FROM dictionaries WHERE id = ?", (codec.DICTIONARY_ID,)).fetchone()
    dictionary = bytes(row[0]) if row else b""
    bad = 0
    for killmail_id, codec_id, blob in db.execute("SELECT killmail_id, codec, body FROM kills"):
        try:
            ujson.loads(codec.unpack_row(codec_id, blob, dictionary))
        except (zlib.error, ValueError) as exc:
            bad += 1
            if bad <= 10:
                report.problems.append(f"kill {killmail_id}: body does not decode ({exc})")
    if bad > 10:
        report.problems.append(f"... {bad} kills in all do not decode")
    if not bad:
        report.facts.append(f"all {kills} kill bodies decode")


def _iso(ts: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


# -- command line ----------------------------------------------------------------------------


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db_help = "SQLite database file (env KILLBOARD_DB, default data/killboard.sqlite3)"
    p = commands.add_parser(
        "backup",
        help="copy the database consistently, also while the server runs",
        description="Copy the database with SQLite's online backup API; safe while the server runs.",
    )
    p.add_argument("dest", type=Path, help="target file, or a directory for a timestamped copy")
    p.add_argument("--db", type=Path, default=argparse.SUPPRESS, help=db_help)
    p.add_argument("--quiet", action="store_true", help="no progress bar or final line, only errors")
    p.add_argument("--pages", type=int, default=1024, help="pages copied per step (default 1024, 4 MiB)")
    p.set_defaults(run=backup_command)
    p = commands.add_parser(
        "check",
        help="verify the database; exit 1 when damaged",
        description="Integrity check, schema version, counts, and that every kill decodes. Exit 1 on damage.",
    )
    p.add_argument("--db", type=Path, default=argparse.SUPPRESS, help=db_help)
    p.add_argument("--quick", action="store_true", help="quick_check only; skip decoding every kill")
    p.set_defaults(run=check_command)


def backup_command(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    source = settings.from_args(args).db_path
    # tqdm's bar over the pages copied, on stderr and only on a terminal (a cron job's mail gets
    # the final line alone).
    bar = tqdm(desc="backup", unit="page", file=sys.stderr, disable=args.quiet or not sys.stderr.isatty())

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    started = time.monotonic()
    try:
        with bar:
            written = backup(source, args.dest, progress, args.pages)
    except (ToolError, sqlite3.Error, OSError) as exc:
        print(f"backup failed: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, ToolError | OSError) else EXIT_DAMAGED
    size = written.stat().st_size
    if not args.quiet:
        print(f"backup: wrote {written} ({size / 2**20:.1f} MiB) in {time.monotonic() - started:.1f} s", file=out)
    return EXIT_OK


def check_command(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    path = settings.from_args(args).db_path
    try:
        report = check(path, quick=args.quick)
    except ToolError as exc:
        print(f"check: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for fact in report.facts:
        print(f"check: {fact}", file=out)
    for problem in report.problems:
        print(f"check: DAMAGE: {problem}", file=out)
    print(f"check: {path}: {'ok' if report.ok else 'DAMAGED'}", file=out)
    return EXIT_OK if report.ok else EXIT_DAMAGED
