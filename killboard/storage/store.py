"""SQLite storage: the durable inbox, stored kills with their sequence numbers, names, feed state.

One write connection owns every write (guarded by a lock so transactions never interleave);
a second connection serves reads, which WAL lets run beside the writer. Kills are kept in their
compact source form (killboard/kill/codec.py) and rendered to the full killmail JSON on read.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
import zlib
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import ujson

from ..kill import codec
from . import participants
from .rendering import Big, BigRender, decode_rows, render_decoded
from .rows import Counts, InboxRow, NewKill, StoredKill
from .schema import INDEX_BACKLOG, PRUNED_KILLMAIL_ID, PRUNED_SEQ, REINDEX_THROUGH, ensure_incremental_vacuum, migrate
from .sqlite import (
    chunks,
    connect,
    existing,
    in_thread,
    pairs_in,
    parameter_limit,
    seqs_of,
    unusable,
)

log = logging.getLogger(__name__)

# Renders a stored kill's source to the full killmail JSON, with player names from `names`.
Render = codec.Render
# An index kept beside the kills, written in their transaction: given the new (seq, kill) pairs in
# seq order after they are inserted, and the seqs of kills about to be deleted by retention.
# Plain functions on the sqlite3 connection, called in the database thread inside the one call
# that runs the whole transaction (Store.transact): no await, no hop back to the event loop.
TxWriter = Callable[[sqlite3.Connection, Sequence[tuple[int, "NewKill"]]], None]
TxPruner = Callable[[sqlite3.Connection, Sequence[int]], None]
T = TypeVar("T")


def compress(body: bytes) -> bytes:
    # Level 1: 165 µs for an average 29 KB kill against 408 µs at level 6, for files ~15%
    # larger (4.5x smaller than the JSON instead of 5.2x); any level decompresses the same.
    return zlib.compress(body, 1)


# /health's four figures in one statement, one hop to the reader's thread: a hop each waited for
# the GIL twice, behind a fleet fight's threads (bench/bigkill.py).
COUNTS = (
    "SELECT (SELECT count(*) FROM inbox), (SELECT count(*) FROM kills WHERE seq > ?),"
    " (SELECT max(seq) FROM kills), (SELECT count(*) FROM names_pending)"
)


class Store:
    """The database of one server (or one import run beside it)."""

    def __init__(
        self,
        path: Path,
        writer: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        render: Render | None = None,
    ) -> None:
        self.path = path
        self._writer = writer
        self._reader = reader
        self._lock = asyncio.Lock()
        self._closed = False
        self.render = render
        # Renders a fleet fight's source document (id, hash, document, names lookup) elsewhere
        # (ingest/offload.py: a worker process); None, or None back: in a thread here.
        self.render_big: BigRender | None = None
        self._dictionaries: dict[int, bytes] = {}
        self._dictionary = b""
        # What retention removed (0: nothing yet); loaded at open, updated by prune().
        self.pruned_through_seq = 0
        self.pruned_max_killmail_id = 0
        self.index_backlog_through = 0
        self.reindex_through = 0
        # Indexes kept beside the kills (battles, entity figures) write in the kills' own
        # transaction: `writers` after new kills are inserted, `pruners` before kills are deleted.
        # Registered by the stages above; the store imports none of them.
        self.writers: list[TxWriter] = []
        self.pruners: list[TxPruner] = []
        # Called by the pipeline with each new kill while it is prepared, before the write (a
        # thread for a big kill): what a writer needs of the kill alone goes in `kill.prepared`.
        self.preparers: list[Callable[[NewKill], None]] = []
        # Told the ids of stored kills that changed after their commit (rewritten, names filled
        # in, pruned): caches of rendered kills (web/viewcache.py) forget them. Called in order.
        self.on_changed: list[Callable[[Collection[int]], None]] = []
        # Told the player ids whose names were saved: a compact row shows them from now on.
        self.on_named: list[Callable[[Collection[int]], None]] = []
        # The kept count of kills (see count()): None until first asked, and up to date through
        # seq `_count_seq`. The lock keeps a count and a prune from adjusting it at once.
        self._count: int | None = None
        self._count_seq = 0
        self._count_lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path, render: Render | None = None) -> Store:
        """Open (creating or migrating) the database. Without `render`, the first read of a
        compact kill loads the bundled static data to render with (tools and tests).

        Raises StoreUnusable when the file cannot serve: nothing is left running then."""
        try:
            return await cls._open(path, render)
        except (sqlite3.Error, OSError) as exc:
            raise unusable(path, exc) from exc

    @classmethod
    async def _open(cls, path: Path, render: Render | None) -> Store:
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = await connect(path)
        try:
            await ensure_incremental_vacuum(writer)
            await migrate(writer)
            reader = await connect(path)
        except BaseException:
            await writer.close()
            raise
        store = cls(path, writer, reader, render)
        try:
            await store._load()
        except BaseException:
            await store.close()
            raise
        return store

    async def _load(self) -> None:
        dictionary = codec.load_dictionary()
        async with self.transaction() as db:
            await db.execute(
                "INSERT INTO dictionaries (id, data) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (codec.DICTIONARY_ID, dictionary),
            )
            async with db.execute("SELECT id, data FROM dictionaries") as cur:
                self._dictionaries = {r[0]: bytes(r[1]) for r in await cur.fetchall()}
        if self._dictionaries[codec.DICTIONARY_ID] != dictionary:
            raise RuntimeError(
                f"dictionary {codec.DICTIONARY_ID} in {self.path} differs from {codec.DICTIONARY_PATH}: "
                "a changed dictionary needs a new DICTIONARY_ID"
            )
        self._dictionary = dictionary
        self.pruned_through_seq = int(await self.get_state(PRUNED_SEQ) or 0)
        self.pruned_max_killmail_id = int(await self.get_state(PRUNED_KILLMAIL_ID) or 0)
        # Kills stored before the participant index that still wait for it (index_backlog).
        self.index_backlog_through = int(await self.get_state(INDEX_BACKLOG) or 0)
        # Kills indexed by an older enrichment, waiting to be looked over (entities.backlog.reindex).
        self.reindex_through = int(await self.get_state(REINDEX_THROUGH) or 0)

    async def close(self) -> None:
        """Idempotent: cleanup may run after a failed start."""
        if self._closed:
            return
        self._closed = True
        async with self._lock:
            await self._reader.close()
            await self._writer.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            await self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield self._writer
                await self._writer.execute("COMMIT")
            except BaseException:
                # SQLite may already have rolled back by itself (a full disk does that, and so
                # can a failed COMMIT): a second ROLLBACK would raise and hide the real error.
                if self._writer.in_transaction:
                    with suppress(sqlite3.Error):
                        await self._writer.execute("ROLLBACK")
                raise

    async def transact(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` as one write transaction (BEGIN IMMEDIATE, `fn`, COMMIT; ROLLBACK when it
        raises) in the database thread, on the plain sqlite3 connection; returns what `fn` does.

        One hop to the thread and back, however many statements: a batch's transaction as ~15
        awaits waited for an event loop busy with POSTs and the next batch at every step, and the
        thread let go of the GIL and waited to get it back each time (issue 21). `fn` must not
        touch what the event loop uses meanwhile; it runs with the write lock held."""
        async with self._lock:
            return await in_thread(self._writer, lambda conn: _in_transaction(conn, fn))

    # -- inbox: durable before acknowledgement --------------------------------------------

    async def add_to_inbox(
        self, rows: Sequence[InboxRow], state: dict[str, str] | None = None
    ) -> tuple[list[int], list[int]]:
        """Record submissions durably. Returns (accepted ids, ids already stored or waiting).

        `state` (e.g. a feed cursor) is written in the same transaction, so the cursor never
        moves past a kill that is not safely in the inbox, nor stays behind one that is.
        """
        if not rows:
            if state:
                await self.set_state(state)
            return [], []
        ids = [r.killmail_id for r in rows]
        now = time.time()

        def write(db: sqlite3.Connection) -> dict[int, InboxRow]:
            known = existing(db, "kills", ids) | existing(db, "inbox", ids)
            fresh: dict[int, InboxRow] = {}
            for row in rows:
                if row.killmail_id not in known:
                    fresh.setdefault(row.killmail_id, row)
            db.executemany(
                "INSERT INTO inbox (killmail_id, payload, source, live, received_at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                [(r.killmail_id, r.payload, r.source, int(r.live), now) for r in fresh.values()],
            )
            if state:
                _put_state(db, state)
            return fresh

        fresh = await self.transact(write)
        accepted = list(fresh)
        fresh_set = set(accepted)
        duplicates = [i for i in dict.fromkeys(ids) if i not in fresh_set]
        return accepted, duplicates

    async def inbox(self, after_id: int = 0, limit: int = 1000) -> list[InboxRow]:
        """Submissions acknowledged but not yet processed (after a crash or a stop)."""
        async with self._reader.execute(
            "SELECT killmail_id, payload, source, live FROM inbox WHERE killmail_id > ? ORDER BY killmail_id LIMIT ?",
            (after_id, limit),
        ) as cur:
            return [InboxRow(r[0], r[1], r[2], bool(r[3])) for r in await cur.fetchall()]

    # -- kills -----------------------------------------------------------------------------

    def _row(self, k: NewKill, now: float) -> tuple[int, str, int, int, float, float, bytes, int]:
        codec_id, blob = self._pack(k)
        return (k.killmail_id, k.killmail_hash, k.kill_time, k.system_id, k.total_value, now, blob, codec_id)

    def pack_source(self, source: bytes) -> bytes:
        """What is stored of a kill's source document (NewKill.packed): deflated with the dictionary."""
        return codec.pack(source, self._dictionary)

    def _pack(self, kill: NewKill) -> tuple[int, bytes]:
        if kill.source:
            return codec.CODEC_SOURCE_ZDICT, kill.packed or codec.pack(kill.source, self._dictionary)
        return codec.CODEC_ENRICHED_ZLIB, compress(kill.body)

    async def save_kills(
        self,
        kills: Sequence[NewKill],
        done: Iterable[int] = (),
        state: dict[str, str] | None = None,
        names_pending: Iterable[int] = (),
    ) -> list[tuple[int, NewKill]]:
        """Store kills, drop their inbox rows and update feed state in one transaction.

        `names_pending`: kills stored with some player names unknown; those that are new here are
        marked in the same transaction, so a crash cannot leave a kill nameless for good.
        Returns (seq, kill) for the kills that were new; duplicates are skipped, never re-sent.
        """
        done_ids = list(done)
        pending = list(names_pending)
        now = time.time()
        return await self.transact(lambda db: self._save(db, kills, done_ids, state, pending, now))

    async def alone(self, killmail_id: int, players: Collection[int]) -> tuple[bool, dict[int, str]]:
        """For a kill posted alone, in one hop to the reader's thread: whether `killmail_id` is
        stored already (then no names: a duplicate needs no enrichment), and the stored names of
        its `players` (Store.names)."""
        wanted = list(set(players))

        def run(db: sqlite3.Connection) -> tuple[bool, dict[int, str]]:
            if existing(db, "kills", [killmail_id]):
                return True, {}
            return False, _names_in(db, wanted)

        return await in_thread(self._reader, run)

    async def save_alone(self, kill: NewKill) -> list[tuple[int, NewKill]]:
        """save_kills for one kill enriched with names all read from the table (Store.alone): the
        write does not insert them again. As with the worker's batches, an inbox row of the same
        id is removed."""
        now = time.time()
        done = [kill.killmail_id]
        return await self.transact(lambda db: self._save(db, [kill], done, None, [], now, names_known=True))

    def _save(
        self,
        db: sqlite3.Connection,
        kills: Sequence[NewKill],
        done_ids: list[int],
        state: dict[str, str] | None,
        names_pending: list[int],
        now: float,
        names_known: bool = False,
    ) -> list[tuple[int, NewKill]]:
        """save_kills' transaction, in the database thread (Store.transact). `names_known`: the
        kills' names were all read from the names table just before (save_alone)."""
        known = existing(db, "kills", [k.killmail_id for k in kills])
        fresh: dict[int, NewKill] = {}
        for k in kills:
            if k.killmail_id not in known:
                fresh.setdefault(k.killmail_id, k)
        names: dict[int, str] = {}
        for k in () if names_known else fresh.values():
            names.update((i, n) for i, n in k.names.items() if n)
        db.executemany(
            "INSERT INTO kills (killmail_id, killmail_hash, kill_time, system_id, total_value, stored_at, body,"
            " codec) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [self._row(k, now) for k in fresh.values()],
        )
        if names:
            # Names we enriched with are kept, so a read renders what was broadcast; a name
            # the resolver already stored (perhaps newer) is left alone.
            db.executemany(
                "INSERT INTO names (id, name, category, updated_at) VALUES (?, ?, '', ?) ON CONFLICT DO NOTHING",
                [(i, n, now) for i, n in names.items()],
            )
        seqs = seqs_of(db, list(fresh))
        new = sorted(((seqs[i], k) for i, k in fresh.items()), key=lambda pair: pair[0])
        participants.index(db, [(seq, self._participation(k)) for seq, k in new])
        for write in self.writers:
            write(db, new)
        pending = [(i, now) for i in names_pending if i in fresh]
        if pending:
            db.executemany(
                "INSERT INTO names_pending (killmail_id, since) VALUES (?, ?) ON CONFLICT DO NOTHING", pending
            )
        if done_ids:
            db.executemany("DELETE FROM inbox WHERE killmail_id = ?", [(i,) for i in done_ids])
        if state:
            _put_state(db, state)
        return new

    async def rewrite(
        self,
        killmail_id: int,
        esi: dict[str, Any],
        zkb: dict[str, Any] | None,
        prices: Mapping[int, float] | None = None,
    ) -> bool:
        """Replace a stored kill's source document (a corrected ESI body or zkb block), valued
        with `prices` (codec.kill_prices), or with the live price book when None.

        Player names are not part of it: they are read from `names` on every read, so updating a
        name there changes every stored kill that shows it. False when the kill is not stored.
        """
        blob = codec.pack(codec.source_document(esi, zkb, prices), self._dictionary)
        async with self.transaction() as db:
            cur = await db.execute(
                "UPDATE kills SET body = ?, codec = ? WHERE killmail_id = ?",
                (blob, codec.CODEC_SOURCE_ZDICT, killmail_id),
            )
            found = cur.rowcount > 0
        self.changed((killmail_id,))
        return found

    async def query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read-only query on the reader connection (for indexes kept beside the kills:
        battles, entity pages), so other stages need not reach into the store's connections."""
        async with self._reader.execute(sql, tuple(args)) as cur:
            return [tuple(row) for row in await cur.fetchall()]

    async def foreign_version(self) -> int:
        """SQLite's `PRAGMA data_version` on the write connection: it moves when ANOTHER connection
        commits (an import, `battles rebuild`, a second server on this file), never for this
        store's own writes (the reader never writes). A read, so it takes no lock; caches of
        rendered pages poll it (killboard/web/foreign.py)."""
        # execute_fetchall: one hop to the writer's thread, not three (execute, fetch, close). The
        # poll runs four times a second, and each hop wakes that thread and then the loop.
        rows = await self._writer.execute_fetchall("PRAGMA data_version")
        row = next(iter(rows), None)
        return int(row[0]) if row else 0

    async def get(self, killmail_id: int) -> StoredKill | None:
        async with self._reader.execute(_SELECT + " WHERE killmail_id = ?", (killmail_id,)) as cur:
            row = await cur.fetchone()
        return (await self._render([row]))[0] if row else None

    async def many(self, killmail_ids: Sequence[int]) -> list[StoredKill]:
        """The stored kills among `killmail_ids`, newest first by kill id."""
        rows: list[Any] = []
        for chunk in chunks(list(killmail_ids), 900):
            marks = ",".join("?" * len(chunk))
            async with self._reader.execute(_SELECT + f" WHERE killmail_id IN ({marks})", chunk) as cur:
                rows += await cur.fetchall()
        rows.sort(key=lambda row: row[1], reverse=True)
        return await self._render(rows)

    async def latest(self, limit: int, before_id: int | None = None) -> list[StoredKill]:
        """Newest first by kill id (kill ids grow with time), optionally older than `before_id`."""
        sql = _SELECT
        args: tuple[int, ...] = (limit,)
        if before_id is not None:
            sql += " WHERE killmail_id < ?"
            args = (before_id, limit)
        async with self._reader.execute(sql + " ORDER BY killmail_id DESC LIMIT ?", args) as cur:
            return await self._render(await cur.fetchall())

    async def latest_ids(self, limit: int, before_id: int | None = None) -> list[int]:
        """The ids of the newest `limit` kills, newest first, optionally older than `before_id`
        (the primary key alone: no body read)."""
        args: tuple[int, ...]
        if before_id is None:
            sql, args = "SELECT killmail_id FROM kills ORDER BY killmail_id DESC LIMIT ?", (limit,)
        else:
            sql = "SELECT killmail_id FROM kills WHERE killmail_id < ? ORDER BY killmail_id DESC LIMIT ?"
            args = (before_id, limit)
        async with self._reader.execute(sql, args) as cur:
            return [row[0] for row in await cur.fetchall()]

    async def after(self, seq: int, limit: int) -> list[StoredKill]:
        """Kills stored after sequence `seq`, in the order they were stored."""
        async with self._reader.execute(_SELECT + " WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)) as cur:
            return await self._render(await cur.fetchall())

    async def seqs_after(self, seq: int, upto: int, limit: int) -> list[int]:
        """The seqs of the kills with `seq` < seq <= `upto`, oldest first: a page of a replay,
        whose kills are then rendered only where nobody has them yet (`by_seqs`)."""
        sql = "SELECT seq FROM kills WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?"
        async with self._reader.execute(sql, (seq, upto, limit)) as cur:
            return [row[0] for row in await cur.fetchall()]

    async def by_seqs(self, seqs: Sequence[int]) -> list[StoredKill]:
        """The kills with these seqs that are still stored, in seq order."""
        if not seqs:
            return []
        marks = ",".join("?" * len(seqs))
        async with self._reader.execute(_SELECT + f" WHERE seq IN ({marks}) ORDER BY seq", tuple(seqs)) as cur:
            return await self._render(await cur.fetchall())

    def unpack(self, codec_id: int, blob: bytes) -> bytes:
        """The stored document of a row: enriched JSON (codec 0) or the source document (codec 1)."""
        return codec.unpack_row(codec_id, blob, self._dictionary)

    async def _render(self, fetched: Iterable[aiosqlite.Row | tuple[Any, ...]]) -> list[StoredKill]:
        """Rows to full killmail JSON, off the event loop: the documents are unpacked and decoded
        in one thread hop for the whole page, its player names read in one query, and its kills
        enriched and encoded in one more hop (storage/rendering.py; ~0.5 ms a kill: a battle page's 244 kills held
        the loop ~120 ms when this ran on it). A fleet fight goes to `render_big` if set."""
        rows = [tuple(row) for row in fetched]
        if not rows:
            return []
        decoded, player_ids = await asyncio.to_thread(decode_rows, rows, self.unpack, self.render_big is not None)
        for i, item in enumerate(decoded):
            if isinstance(item, Big) and self.render_big is not None:
                _, killmail_id, killmail_hash, *_ = rows[i]
                body = await self.render_big(killmail_id, killmail_hash, item.document, self.names)
                if body is not None:
                    decoded[i] = body
        if any(isinstance(item, Big) for item in decoded):  # render_big had no answer: here, then
            decoded, more = await asyncio.to_thread(decode_rows, rows, self.unpack, False, decoded)
            player_ids |= more
        names = await self.names(player_ids) if player_ids else {}
        if self.render is None:
            self.render = codec.default_renderer()
        bodies = await asyncio.to_thread(render_decoded, decoded, names, self.render)
        return [StoredKill(row[0], row[1], row[3], body) for row, body in zip(rows, bodies, strict=True)]

    async def kills_of(
        self, kind: participants.Kind, entity: int, before_seq: int | None = None, limit: int = 50
    ) -> list[tuple[int, int]]:
        """participants.kills_of on the reader connection: (seq, role code), newest first."""
        return await participants.kills_of(self._reader, kind, entity, before_seq, limit)

    async def _number(self, sql: str) -> int:
        """The one value a read query returns (a count, a max, a pragma); 0 for none or NULL."""
        # execute_fetchall: one hop to the reader's thread, not three (execute, fetch, close).
        # /health asks four of these and every page view asks last_seq: under load each hop
        # waits for the GIL twice.
        rows = await self._reader.execute_fetchall(sql)
        row = next(iter(rows), None)
        return int(row[0]) if row and row[0] is not None else 0

    async def count(self) -> int:
        """Kills stored. Kept, not counted on each call: count(*) walks a whole index, and /health
        and every page ask. The first call counts; later ones add the rows stored since (a range
        on the seq key, so kills another process stored count too), and prune() subtracts."""
        async with self._count_lock:
            # The first count reads the smallest index whole; a range of seq reads only new rows.
            where, args = ("", ()) if self._count is None else (" WHERE seq > ?", (self._count_seq,))
            rows = await self._reader.execute_fetchall("SELECT count(*), max(seq) FROM kills" + where, args)
            row = next(iter(rows), None)
            added, last = (int(row[0]), row[1]) if row else (0, None)
            self._count = (self._count or 0) + added
            if last is not None:
                self._count_seq = int(last)
            return self._count

    async def counts(self) -> Counts:
        """/health's figures in one read on the reader connection, which no write transaction
        holds up (WAL). The kept count plus the rows stored since, without count()'s lock: a
        prune holds it while it waits for the writer (behind a fleet fight's transaction)."""
        if self._count is None and not self._count_lock.locked():
            await self.count()  # the first count walks an index whole, once
        # With no kept count (a prune held the lock from the start), since is 0: a whole count.
        idle = not self._count_lock.locked()
        base, since = self._count or 0, self._count_seq
        rows = await self._reader.execute_fetchall(COUNTS, (since,))
        inbox, added, last, pending = next(iter(rows))
        # Kept for later counts only if no prune was under way at either end or changed the count
        # meanwhile (one that starts after the snapshot reads on this thread after this read).
        if added and idle and not self._count_lock.locked() and (self._count, self._count_seq) == (base, since):
            self._count, self._count_seq = base + added, int(last)
        return Counts(int(inbox), base + int(added), int(last or 0), int(pending))

    async def inbox_count(self) -> int:
        return await self._number("SELECT count(*) FROM inbox")

    async def last_seq(self) -> int:
        return await self._number("SELECT max(seq) FROM kills")

    # -- retention and upkeep ---------------------------------------------------------------

    async def prune(self, older_than: int, batch: int) -> int:
        """Delete up to `batch` kills whose kill time is before `older_than` (unix seconds), in one
        short transaction, and remember the highest seq and id removed. Returns how many went."""
        async with self._count_lock:
            return await self._prune(older_than, batch)

    async def _prune(self, older_than: int, batch: int) -> int:
        async with self._reader.execute(
            _SELECT + " WHERE kill_time < ? ORDER BY kill_time LIMIT ?", (older_than, batch)
        ) as cur:
            rows = list(await cur.fetchall())
        if not rows:
            return 0
        # Their index rows go with them: what each kill indexed is worked out again from the kill.
        gone = [(row[0], self._participation(kill)) for row, kill in zip(rows, await self._decoded(rows), strict=True)]
        seqs = [seq for seq, _ in gone]
        pruned_seq = max(self.pruned_through_seq, *seqs)
        pruned_id = max(self.pruned_max_killmail_id, *(r[1] for r in rows))

        def delete(db: sqlite3.Connection) -> None:
            for prune in self.pruners:
                prune(db, seqs)
            participants.unindex(db, gone)
            db.executemany("DELETE FROM kills WHERE seq = ?", [(seq,) for seq in seqs])
            _put_state(db, {PRUNED_SEQ: str(pruned_seq), PRUNED_KILLMAIL_ID: str(pruned_id)})

        await self.transact(delete)
        self.pruned_through_seq, self.pruned_max_killmail_id = pruned_seq, pruned_id
        self.changed([row[1] for row in rows])
        if self._count is not None:
            # Rows past _count_seq were never added to the count: the next count() skips them.
            self._count -= sum(1 for seq in seqs if seq <= self._count_seq)
        return len(rows)

    def _participation(self, kill: NewKill) -> participants.Participation:
        """Who took part in a kill: as the pipeline worked it out, or from the kill itself (tools)."""
        if kill.participation is not None:
            return kill.participation
        if kill.enriched is not None:
            return participants.participation(kill.enriched)
        if kill.source:
            sub, prices = codec.decode(kill.killmail_id, kill.killmail_hash, kill.source)
            if self.render is None:
                self.render = codec.default_renderer()
            return participants.participation(ujson.loads(self.render(sub, kill.names, prices)))
        return participants.participation(ujson.loads(kill.body))

    async def _decoded(self, rows: Sequence[Any]) -> list[NewKill]:
        """Stored rows as the kills they were when new (enriched; JSON parsed off the loop), for
        the index: retention works out what a kill indexed, the backlog what it must index."""
        kills = await self._render(rows)
        enriched = await asyncio.to_thread(lambda: [ujson.loads(k.body) for k in kills])
        return [
            NewKill(row[1], row[2], row[3], kill["system_id"], kill["total_value"], k.body, enriched=kill)
            for row, k, kill in zip(rows, kills, enriched, strict=True)
        ]

    async def index_backlog(self, batch: int = 200) -> int:
        """Index kills stored before the participant index existed, newest first, a batch a
        transaction; returns how many were indexed. Run in the background after open."""
        done = 0
        while (through := self.index_backlog_through) > 0:
            async with self._reader.execute(
                _SELECT + " WHERE seq <= ? ORDER BY seq DESC LIMIT ?", (through, batch)
            ) as cur:
                rows = list(await cur.fetchall())
            kills = sorted(zip((r[0] for r in rows), await self._decoded(rows), strict=True), key=lambda p: p[0])
            left = rows[-1][0] - 1 if len(rows) == batch else 0

            def index(db: sqlite3.Connection, kills: list[tuple[int, NewKill]] = kills, left: int = left) -> None:
                participants.index(db, [(seq, self._participation(k)) for seq, k in kills])
                for write in self.writers:
                    write(db, kills)
                _put_state(db, {INDEX_BACKLOG: str(left)})

            await self.transact(index)
            self.index_backlog_through = left
            done += len(rows)
        return done

    async def indexed_again(self, seqs: Sequence[int]) -> list[tuple[int, int, participants.Participation]]:
        """(seq, killmail id, participation) of the stored kills among `seqs`, in seq order, as
        enrichment sees them now (their stored documents enriched again): what the index would
        hold were they stored today (killboard/entities/backlog.py `reindex`)."""
        rows: list[Any] = []
        for chunk in chunks(sorted(seqs), 900):
            marks = ",".join("?" * len(chunk))
            async with self._reader.execute(_SELECT + f" WHERE seq IN ({marks}) ORDER BY seq", chunk) as cur:
                rows += await cur.fetchall()
        kills = await self._decoded(rows)
        return [(row[0], row[1], self._participation(kill)) for row, kill in zip(rows, kills, strict=True)]

    async def free_pages(self) -> int:
        return await self._number("PRAGMA freelist_count")

    async def incremental_vacuum(self, pages: int) -> None:
        """Give up to `pages` free pages back to the file system (one short write)."""
        # The pragma frees one page per step; Python's execute() steps once (measured: one page
        # freed), executescript() steps each statement to the end.
        async with self._lock:
            await self._writer.executescript(f"PRAGMA incremental_vacuum({int(pages)});")

    async def checkpoint(self) -> tuple[int, int, int]:
        """Copy the WAL into the database and truncate it, without waiting for anyone.

        Returns SQLite's (busy, wal frames, frames checkpointed); busy=1 means a reader still
        needs part of the WAL and the next call finishes the job. The busy timeout is off for
        the call: TRUNCATE would otherwise wait for readers while holding the write lock.
        """
        async with self._lock:
            await self._writer.execute("PRAGMA busy_timeout=0")
            try:
                async with self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)") as cur:
                    row = await cur.fetchone()
            finally:
                await self._writer.execute("PRAGMA busy_timeout=5000")
        return (int(row[0]), int(row[1]), int(row[2])) if row else (0, 0, 0)

    # -- names and state ---------------------------------------------------------------------

    async def names(self, ids: Iterable[int]) -> dict[int, str]:
        """The stored names of these players. One hop to the reader's thread however many: a
        batch of 200 kills asks for ~2,500, which were three hops of 900 ids, each waiting for a
        busy event loop while the worker process waited for the batch."""
        wanted = list(set(ids))
        if not wanted:
            return {}
        return await in_thread(self._reader, lambda db: _names_in(db, wanted))

    async def save_names(self, names: dict[int, tuple[str, str]]) -> None:
        """Cache player names from ESI: id -> (name, category)."""
        if names:
            now = time.time()
            async with self.transaction() as db:
                await db.executemany(
                    "INSERT INTO names (id, name, category, updated_at) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (id) DO UPDATE SET name = excluded.name, category = excluded.category,"
                    " updated_at = excluded.updated_at",
                    [(i, name, cat, now) for i, (name, cat) in names.items()],
                )
            for listener in self.on_named:
                listener(names.keys())

    async def names_pending(self, limit: int = 200) -> list[StoredKill]:
        """Kills stored before all their player names were known, rendered with the names known now."""
        async with self._reader.execute(
            "SELECT k.seq, k.killmail_id, k.killmail_hash, k.kill_time, k.body, k.codec FROM names_pending p"
            " JOIN kills k USING (killmail_id) ORDER BY p.killmail_id LIMIT ?",
            (limit,),
        ) as cur:
            return await self._render(await cur.fetchall())

    async def names_pending_count(self) -> int:
        return await self._number("SELECT count(*) FROM names_pending")

    async def rewrite_bodies(self, bodies: dict[int, bytes], done: Iterable[int]) -> None:
        """Replace the stored JSON of kills (names filled in later) and clear them from names_pending.

        Only rows stored whole (codec 0, schema 1) hold names to patch: compact rows render player
        names from `names` on every read, so save_names already updated them.
        """
        done = list(done)
        async with self.transaction() as db:
            await db.executemany(
                "UPDATE kills SET body = ? WHERE killmail_id = ? AND codec = ?",
                [(compress(b), i, codec.CODEC_ENRICHED_ZLIB) for i, b in bodies.items()],
            )
            await db.executemany("DELETE FROM names_pending WHERE killmail_id = ?", [(i,) for i in done])
        # `done` too: a compact row renders the names saved meanwhile, so it changed without a rewrite.
        self.changed({*bodies, *done})

    def changed(self, killmail_ids: Collection[int]) -> None:
        """Tell every `on_changed` listener these kills changed (kept pages and summaries go)."""
        for listener in self.on_changed:
            listener(killmail_ids)

    async def save_prices(self, prices: dict[int, tuple[float | None, float | None]]) -> None:
        """Replace the market price table (ESI /markets/prices/): type id -> (average, adjusted)."""
        now = time.time()
        async with self.transaction() as db:
            await db.execute("DELETE FROM prices")
            await db.executemany(
                "INSERT INTO prices (type_id, average, adjusted, updated_at) VALUES (?, ?, ?, ?)",
                [(t, avg, adj, now) for t, (avg, adj) in prices.items()],
            )

    async def load_prices(self) -> tuple[dict[int, float], float | None]:
        """(type id -> unit price, when they were fetched); the average wins, else the adjusted price."""
        async with self._reader.execute("SELECT type_id, average, adjusted, updated_at FROM prices") as cur:
            rows = await cur.fetchall()
        out = {r[0]: r[1] if r[1] is not None else r[2] for r in rows if r[1] is not None or r[2] is not None}
        return out, (max(r[3] for r in rows) if rows else None)

    async def set_state(self, state: dict[str, str]) -> None:
        await self.transact(lambda db: _put_state(db, state))

    async def get_state(self, key: str) -> str | None:
        async with self._reader.execute("SELECT value FROM state WHERE key = ?", (key,)) as cur:
            row = await cur.fetchone()
        return row[0] if row else None


_SELECT = "SELECT seq, killmail_id, killmail_hash, kill_time, body, codec FROM kills"


def _in_transaction(db: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """`fn` between BEGIN IMMEDIATE and COMMIT, in the database thread (Store.transact)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        result = fn(db)
        db.execute("COMMIT")
    except BaseException:
        # SQLite may already have rolled back by itself (a full disk does that, and so can a
        # failed COMMIT): a second ROLLBACK would raise and hide the real error.
        if db.in_transaction:
            with suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        raise
    return result


def _names_in(db: sqlite3.Connection, ids: list[int]) -> dict[int, str]:
    """Store.names on the plain connection, in the database thread: statements as big as the
    connection allows (a batch asks for ~2,500 ids)."""
    return pairs_in(db, "SELECT id, name FROM names WHERE id IN ({})", ids, parameter_limit(db))


def _put_state(db: sqlite3.Connection, state: dict[str, str]) -> None:
    db.executemany(
        "INSERT INTO state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        list(state.items()),
    )
