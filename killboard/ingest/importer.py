"""Bulk import (`python app.py import PATH...`): files of killmails into the same database.

Every item goes through the same validation, inbox, enrichment and store as a live kill, in
batches (one short transaction each, so a server running on the same file only waits
milliseconds), marked not live: imported kills are stored, never broadcast. Duplicates are
skipped; a bad file or item is reported with its path and reason, and the import goes on.
"""

from __future__ import annotations

import asyncio
import bz2
import gzip
import io
import logging
import sys
import tarfile
import zlib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import ujson
from tqdm import tqdm

from ..config import Config
from ..kill.prices import price_book
from ..kill.staticdata import StaticData, load_static
from ..kill.validate import Invalid, Submission, check_esi, parse_submission
from ..storage.rows import InboxRow
from ..storage.store import Store
from .esi import EsiClient, NameService
from .offload import Offload
from .pipeline import Pipeline, Prepared
from .queue import KillQueue, Pending, from_inbox, inbox_payload
from .upstream import new_session

log = logging.getLogger(__name__)

SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz", ".json.bz2", ".jsonl.bz2", ".tar.bz2")
# A compressed .json or .jsonl is read whole, as a plain one is: past this it is refused rather
# than left to fill the memory (a few MB of gzip can hold GBs of zeros).
MAX_INFLATED = 2**30
BATCH = 200
# Called with the opened store and static data before importing; returns what to await at the end.
Prepare = Callable[[Store, StaticData], Awaitable[Callable[[], Awaitable[None]]]]
SOURCE = "import"  # the inbox rows an import writes; a later import finishes any left behind


@dataclass(slots=True)
class Summary:
    imported: int = 0
    duplicates: int = 0
    rejected: int = 0
    # Accepted but not stored now: ESI could not complete it yet (left in the inbox for the server
    # to finish) or it failed enrichment (logged).
    incomplete: int = 0
    offloaded: int = 0  # kills made in the worker process (the rest were made in this one)
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        text = f"imported {self.imported}, duplicates {self.duplicates}, rejected {self.rejected}"
        return text + (f", not stored yet {self.incomplete}" if self.incomplete else "")


@dataclass(slots=True)
class Item:
    where: str  # path, path:line or archive:member, for error messages
    data: object
    from_archive: bool = False


class BadInput(Exception):
    """A file that cannot be read at all (not JSON, not an archive)."""


# -- reading --------------------------------------------------------------------------------


def expand(paths: list[Path]) -> tuple[list[Path], list[Path]]:
    """(files to read: the paths given, directories searched for .json and .jsonl (plain,
    .gz or .bz2) and .tar.bz2; the directories where none was found)."""
    out: list[Path] = []
    empty: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(SUFFIXES))
            out.extend(found)
            if not found:
                empty.append(path)
        else:
            out.append(path)
    return out, empty


def read(path: Path, progress: Progress) -> Iterator[Item]:
    """The items of one file; progress advances by the bytes consumed."""
    name = path.name
    if name.endswith(".tar.bz2"):
        yield from _read_archive(path, progress)
        return
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BadInput(exc.strerror or str(exc)) from None
    size = len(raw)
    if name.endswith((".gz", ".bz2")):
        raw = _inflate(raw, name)
        name = name.rpartition(".")[0]
    if name.endswith(".jsonl"):
        lines = raw.splitlines()
        for number, line in enumerate(lines, start=1):
            progress.advance(size / max(1, len(lines)))
            if line.strip():
                try:
                    yield Item(f"{path}:{number}", ujson.loads(line))
                except ValueError as exc:
                    yield Item(f"{path}:{number}", BadInput(f"not JSON: {exc}"))
        return
    try:
        data = ujson.loads(raw)
    except ValueError as exc:
        raise BadInput(f"not JSON: {exc}") from None
    items = data if isinstance(data, list) else [data]
    for index, item in enumerate(items):
        progress.advance(size / max(1, len(items)))
        yield Item(f"{path}[{index}]" if isinstance(data, list) else str(path), item)


def _inflate(raw: bytes, name: str) -> bytes:
    """A .gz or .bz2 file's content (every member or stream of it), at most MAX_INFLATED bytes."""
    kind = "gzip" if name.endswith(".gz") else "bzip2"
    try:
        inflating = gzip.GzipFile(fileobj=io.BytesIO(raw)) if kind == "gzip" else bz2.BZ2File(io.BytesIO(raw))
        with inflating:
            out = inflating.read(MAX_INFLATED + 1)
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise BadInput(f"not a readable {kind} file: {exc}") from None
    if len(out) > MAX_INFLATED:
        raise BadInput(f"decompresses to more than {MAX_INFLATED:,} bytes")
    return out


def _read_archive(path: Path, progress: Progress) -> Iterator[Item]:
    """An EVE Ref daily archive: one ESI killmail JSON file per kill, read as a stream."""
    try:
        raw: IO[bytes] = path.open("rb")
    except OSError as exc:
        raise BadInput(exc.strerror or str(exc)) from None
    with raw:
        done = 0
        try:
            with tarfile.open(fileobj=raw, mode="r|bz2") as archive:
                for member in archive:
                    position = raw.tell()
                    progress.advance(position - done)
                    done = position
                    if not member.isfile() or not member.name.endswith(".json"):
                        continue
                    extracted = archive.extractfile(member)
                    if extracted is None:
                        continue
                    try:
                        yield Item(f"{path}:{member.name}", ujson.loads(extracted.read()), from_archive=True)
                    except ValueError as exc:
                        yield Item(f"{path}:{member.name}", BadInput(f"not JSON: {exc}"))
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise BadInput(f"not a readable tar.bz2 archive: {exc}") from None
        progress.advance(path.stat().st_size - done)


def to_submission(item: Item) -> Submission:
    if isinstance(item.data, BadInput):
        raise Invalid([str(item.data)])
    data = item.data
    if item.from_archive and isinstance(data, dict) and "victim" in data and "killmail_hash" not in data:
        # EVE Ref stores ESI's body verbatim, and ESI leaves the hash out: keep the kill, hash unknown.
        errors = check_esi(data)
        if errors:
            raise Invalid(errors)
        return Submission(data["killmail_id"], "", data, None)
    return parse_submission(data)


# -- progress -------------------------------------------------------------------------------


class Progress:
    """tqdm's bar over the bytes of the inputs, with the kills stored so far, drawn only on a
    terminal (a log or a cron mail gets the rejections and the final line, not a bar)."""

    def __init__(self, total_bytes: int, stream: IO[str], tty: bool) -> None:
        self.stream = stream
        self.tty = tty
        self.kills = 0
        self.total = max(1, total_bytes)
        self.bar = tqdm(
            total=self.total,
            desc="import",
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            file=stream,
            disable=not tty,
            mininterval=0.1,
        )

    def advance(self, nbytes: float) -> None:
        self.bar.update(min(nbytes, self.total - self.bar.n))  # a file may grow while read

    def count(self, kills: int) -> None:
        self.kills += kills
        self.bar.set_postfix_str(f"{self.kills} kills", refresh=False)

    def report(self, problem: str) -> None:
        """One rejected file or item, on its own line above the bar."""
        tqdm.write(f"rejected: {problem}", file=self.stream)

    def close(self) -> None:
        self.bar.close()


# A smaller import is over about as soon as the worker process would be ready (~0.5 s: it
# loads the static data): 300 kills took 1.5 s with it against 1.0 s without (bench.importrate).
WORKER_MIN_BYTES = 4 * 1024 * 1024


# -- running --------------------------------------------------------------------------------


async def run_import(
    config: Config,
    paths: list[Path],
    out: IO[str] = sys.stdout,
    err: IO[str] = sys.stderr,
    tty: bool | None = None,
    prepare: Sequence[Prepare] = (),
    worker: bool | Offload = True,
) -> Summary:
    """Import every item of `paths` into `config.db_path`; returns what happened. Each of `prepare`
    is given the opened store first, and returns its cleanup (cli.py: the battles' writer and the
    entity figures, so imported kills form battles and count as the server's own do). `worker`:
    make kills in a worker process too when the files hold WORKER_MIN_BYTES or more (False: all
    here; an Offload: that one, whatever the size, e.g. started beforehand by a test), stopped
    when the import ends."""
    summary = Summary()
    files, empty = expand(paths)
    missing = [p for p in files if not p.exists()]
    files = [p for p in files if p.exists()]
    progress = Progress(sum(p.stat().st_size for p in files), err, err.isatty() if tty is None else tty)
    for path in missing:
        _reject(summary, progress, f"{path}: no such file or directory")
    for path in empty:  # a wrong folder: said, not an import of nothing that ends "imported 0"
        _reject(summary, progress, f"{path}: no {', '.join(SUFFIXES)} file in it")
    static = load_static(config.data_dir)
    async with AsyncExitStack() as stack:
        store = await Store.open(config.db_path)
        stack.push_async_callback(store.close)
        for step in prepare:
            stack.push_async_callback(await step(store, static))
        prices = price_book(static)
        stored_prices, _ = await store.load_prices()
        prices.market.update(stored_prices)  # the server's latest ESI prices, when it fetched any
        pipeline = Pipeline(
            store=store,
            static=static,
            prices=prices,
            queue=KillQueue(1, config.queue_bytes),
            batch_size=BATCH,
        )
        # The server's worker process makes a batch's ordinary kills, in chunks, while this one
        # writes the batch before (with no write in flight, the loop takes back the chunks it has
        # not started: Pipeline._collect). It ends with this process, even a kill -9.
        if worker is not False and (worker is not True or progress.total >= WORKER_MIN_BYTES):
            offload = pipeline.offload = Offload(config.data_dir) if worker is True else worker
            stack.push_async_callback(offload.close)
            offload.ready()  # started now: its ~0.5 s start-up overlaps the inbox and the first reads
        if config.upstream:
            session = new_session(config.user_agent)
            stack.push_async_callback(session.close)
            esi = EsiClient(session, config.esi_url)
            names = NameService(esi, store, config.names_wait)
            stack.push_async_callback(names.close)
            pipeline.resolve_names = names.resolve
            pipeline.fetch_killmail = esi.killmail
        await _finish_inbox(pipeline, summary, progress)
        writer = Writer(pipeline, summary, progress)
        stack.push_async_callback(writer.close)  # an import that fails or is stopped leaves no task behind
        batch: list[Submission] = []
        for path in files:
            try:
                for item in read(path, progress):
                    try:
                        batch.append(to_submission(item))
                    except Invalid as exc:
                        _reject(summary, progress, f"{item.where}: {'; '.join(exc.errors[:3])}")
                    if len(batch) >= BATCH:
                        await writer.flush(batch)
                        batch = []
            except BadInput as exc:
                _reject(summary, progress, f"{path}: {exc}")
        await writer.flush(batch)
        await writer.wait()
        summary.offloaded = pipeline.offloaded
    progress.close()
    out.write(summary.line() + "\n")
    return summary


async def _finish_inbox(pipeline: Pipeline, summary: Summary, progress: Progress) -> None:
    """Store what an import killed half-way (kill -9, a reboot) left in the inbox.

    Its kills were taken into the inbox but not stored; run again, the import found them there
    and called them duplicates, so they waited for the next server start. Only rows an import
    wrote: a server running beside us owns the rest (its live kills must be broadcast by it).
    """
    after, finished = 0, 0
    while rows := await pipeline.store.inbox(after, BATCH):
        after = rows[-1].killmail_id
        left = [from_inbox(r) for r in rows if r.source == SOURCE]
        if not left:
            continue
        stored = await pipeline.process(left)
        finished += len(stored)
        summary.imported += len(stored)
        summary.incomplete += len(left) - len(stored)
        progress.count(len(stored))
    if finished:
        log.info("stored %d kills an earlier import left in the inbox", finished)


def _reject(summary: Summary, progress: Progress, problem: str) -> None:
    summary.rejected += 1
    summary.problems.append(problem)
    progress.report(problem)


@dataclass(slots=True)
class Writer:
    """The import's batches, each read and prepared while the one before it is written (as
    Pipeline.run does for the server): the write (SQLite, the stored documents' zlib, the
    battles' and figures' writers) runs in aiosqlite's thread while the next batch's kills are
    made in the worker process, so the two overlap instead of taking turns."""

    pipeline: Pipeline
    summary: Summary
    progress: Progress
    _writing: asyncio.Task[None] | None = None

    async def flush(self, batch: list[Submission]) -> None:
        """Put a batch in the inbox and prepare it, then write it once the one before is written."""
        if not batch:
            return
        by_id: dict[int, Submission] = {}
        for sub in batch:
            if sub.killmail_id in by_id:
                self.summary.duplicates += 1  # the same kill twice in the input
            else:
                by_id[sub.killmail_id] = sub
        rows = [InboxRow(s.killmail_id, inbox_payload(s), SOURCE, False) for s in by_id.values()]
        # Through the inbox: an import killed half-way leaves its kills for the server to finish.
        accepted, duplicates = await self.pipeline.store.add_to_inbox(rows)
        self.summary.duplicates += len(duplicates)
        # Counted as the server's worker counts a batch taken and not yet written: with a write in
        # flight the loop leaves the worker's chunks to it (Pipeline._collect).
        self.pipeline.in_flight += 1
        try:
            prepared = await self.pipeline.prepare([Pending(by_id[i], live=False) for i in accepted])
            await self.wait()  # batches are written one at a time, in order
        except BaseException:
            self.pipeline.in_flight -= 1
            raise
        self._writing = asyncio.create_task(self._write(prepared, len(accepted)), name="killboard-import-writer")

    async def _write(self, prepared: Prepared, accepted: int) -> None:
        try:
            stored = await self.pipeline.commit(prepared)
        finally:
            self.pipeline.in_flight -= 1
        self.summary.imported += len(stored)
        self.summary.incomplete += accepted - len(stored)
        self.progress.count(len(stored))

    async def wait(self) -> None:
        """Until the last batch handed over is written; raises what its write raised."""
        writing, self._writing = self._writing, None
        if writing is not None:
            await writing

    async def close(self) -> None:
        """Stop a write still running (the import failed or was cancelled before `wait`)."""
        writing, self._writing = self._writing, None
        if writing is not None and not writing.done():
            writing.cancel()
        if writing is not None:
            with suppress(asyncio.CancelledError, Exception):
                await writing


def main_sync(config: Config, paths: list[Path], prepare: Sequence[Prepare] = (), err: IO[str] = sys.stderr) -> int:
    try:
        summary = asyncio.run(run_import(config, paths, prepare=prepare))
    except KeyboardInterrupt:
        # Ctrl-C: asyncio.run has cancelled the import and closed the store and the worker by now.
        # One line, not a traceback; the exit status a shell gives a command stopped by SIGINT.
        err.write(
            "import interrupted: the kills stored so far stay; those already in the inbox are"
            " stored by the server's next start (or the next import)\n"
        )
        return 130
    return 1 if summary.rejected else 0
