"""Fleet-fight kills, and a catch-up's batches of ordinary kills, made in a worker process of their own.

In this process such a kill holds the GIL for tens of milliseconds at a time even from a
thread: one `ujson.loads` of a 1.75 MB body, one `ujson.dumps` of its inbox row, ~80 ms of
enrichment competing with the loop every switch interval. The worker does all of it and hands
back only bytes and small objects (`Packed`, `Enriched`), so the loop never decodes a big kill.

A catch-up's batches (pipeline.Pipeline._collect) go the same way as inbox payload
bytes, in chunks (`_prepare`), so their ~0.3 ms a kill of Python leave the event loop's GIL too.

The worker (one `spawn` process) starts on the first big kill or catch-up, is shut down by
`close()` (the app's cleanup) and, if it dies, is replaced by the next call; the call that found
it dead runs in this process instead (`None` from `call`), so no kill is lost.
"""

from __future__ import annotations

import asyncio
import logging
import marshal
import multiprocessing
import os
import signal
import threading
import time
from array import array
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Generic, TypeVar

import ujson

from ..kill.codec import decode, kill_prices, load_dictionary, player_ids, renderer, source_document
from ..kill.codec import pack as pack_source
from ..kill.enrich import enrich
from ..kill.frames import encode, encode_ascii
from ..kill.prices import PriceBook
from ..kill.staticdata import StaticData, load_static
from ..kill.topics import KillFacts, kill_facts
from ..kill.validate import Invalid, Submission, parse_submission, parse_time
from ..storage.participants import Participation, participation
from ..storage.participants import pack as pack_pilots
from ..storage.rows import NewKill

log = logging.getLogger(__name__)

T = TypeVar("T")

# A POST body is parsed in the worker when it is one kill over BIG_ONE (~350 attackers; a typical
# kill is 3-30 KB) or anything over BIG_BODY (an array with a fleet fight, or many kills).
BIG_ONE = 64 * 1024
BIG_BODY = 256 * 1024
NICE = 5  # the worker's niceness above the server's
PARENT_CHECK = 1.0  # seconds between the worker's looks at whether the server that started it still runs
# A kill with more attackers and items than this stays bytes in this process, and the pipeline
# has it enriched in the worker (or in a thread).
BIG_KILL = 500
# Slots of the claims a catch-up's chunks are taken with (`Claims`): far more than the chunks ever
# handed over and not yet answered (a batch and the one taken ahead: 8 of 50 kills).
CLAIM_SLOTS = 256
# Seconds a call waits for its answer before the worker is taken for stuck (stopped, deadlocked):
# it is killed, a new one starts, and what it held is done in this process. Its longest calls (a
# 10,000-attacker kill, a few chunks queued before a call) take a second or two on a busy machine.
STUCK = 30.0
# Seconds close() waits for the worker to end (its call in progress; the rest are cancelled) before
# it kills it: a stopped one never ends, and the server would never exit.
CLOSE_WAIT = 2.0


def from_payload(payload: bytes) -> Submission:
    """A submission from its inbox payload (the bytes `queue.inbox_payload` and `pack` make)."""
    d = ujson.loads(payload)
    return Submission(d["id"], d["hash"], d["esi"], d["zkb"])


@dataclass(frozen=True, slots=True)
class Packed(Submission):
    """A big submission as the worker validated it: its inbox payload (`queue.inbox_payload`,
    the same bytes) instead of the decoded ESI body, which stays `{}` here (never None: that
    means "id and hash only")."""

    payload: bytes = b""
    size: int = 0  # attackers plus top-level items (pipeline.kill_size)
    players: bytes = b""  # array("q") of player_ids(esi)

    def player_ids(self) -> set[int]:
        return set(array("q", self.players))

    def unpacked(self) -> Submission:
        """The plain submission (decodes the payload: in a thread, a fleet fight is ~10 ms)."""
        return from_payload(self.payload)


@dataclass(frozen=True, slots=True)
class Enriched:
    """What the worker makes of a Packed kill: everything `pipeline.build_kill` would, as bytes."""

    kill_time: int
    system_id: int
    total_value: float
    body: bytes  # frames.encode of the enriched kill
    source: bytes  # codec.source_document
    participation: bytes  # marshal of (pilots, entities, packed pilots)
    facts: KillFacts | None
    packed: bytes = b""  # `source` as Store.pack_source packs it (a batch's kills); empty: not made

    def rows(self) -> Participation:
        pilots, entities, packed = marshal.loads(self.participation)
        return Participation(pilots, entities, packed)

    def plain(self) -> tuple[Any, ...]:
        """The fields as plain values for marshal (`kills_of`): the facts as their keys."""
        facts = self.facts.keys if self.facts is not None else None
        return (
            self.kill_time,
            self.system_id,
            self.total_value,
            self.body,
            self.source,
            self.participation,
            facts,
            self.packed,
        )


def kills_of(answer: bytes) -> list[Enriched | str]:
    """What `_prepare` answered: one marshal blob for a chunk, not pickled dataclasses (their
    unpickling ran under the server's GIL in the pool's result thread)."""
    out: list[Enriched | str] = []
    for one in marshal.loads(answer):
        if isinstance(one, str):
            out.append(one)
            continue
        kill_time, system_id, total_value, body, source, rows, facts, packed = one
        keys = KillFacts(facts) if facts is not None else None
        out.append(Enriched(kill_time, system_id, total_value, body, source, rows, keys, packed))
    return out


class Claims:
    """Who makes a chunk handed to the worker: whichever of the worker and the loop claims its
    ticket first (a slot a ticket in memory both processes share, under its lock). A chunk the
    loop took back still reaches the worker, which keeps the prices it carries and skips it.

    Why not `Future.cancel()`: it takes back only what the pool has not yet put in the worker's
    call queue (two calls are always there), and on Python 3.11 a call cancelled while its worker
    dies makes the pool's manager thread fail (`InvalidStateError` setting the dead worker's
    error on the cancelled future) and every call behind it hang."""

    def __init__(self, context: Any) -> None:
        self.slots = context.Array("q", CLAIM_SLOTS)  # zeros; tickets start at 1

    def claim(self, ticket: int, block: bool = True) -> bool:
        """Whether this side gets to make the chunk (once: the other side then gets False).
        Without `block` (the event loop), False too while the other side holds the lock."""
        lock = self.slots.get_lock()
        if not lock.acquire(block):
            return False
        try:
            slot = ticket % CLAIM_SLOTS
            if self.slots[slot] >= ticket:
                return False
            self.slots[slot] = ticket
            return True
        finally:
            lock.release()


def wants(body: bytes) -> bool:
    """Whether a POST body goes to the worker: it may hold a fleet fight."""
    return len(body) > BIG_BODY or (len(body) > BIG_ONE and body[:64].lstrip()[:1] == b"{")


# ---- in the worker process ---------------------------------------------------------------------

# The worker process's own static data and prices, set by `_start` there; never set in the server.
_worker: dict[str, Any] = {}


def _start(data_dir: Path, parent: int, claims: Claims | None = None) -> None:
    """The worker's start. `parent`: the server's pid, given by the server itself: a server killed
    while this process was still starting up is already gone, and getppid() here would be 1.
    `claims`: shared with the server, for the chunks it may take back (`_prepare`)."""
    # Below the server: on a busy machine the event loop gets the CPU first, and the worker's
    # own start (imports, static data: ~0.5 s of CPU) does not stall the kill's neighbours.
    os.nice(NICE)
    threading.Thread(target=_exit_with, args=(parent,), name="killboard-parent-watch", daemon=True).start()
    static = load_static(data_dir)
    _worker["static"] = static
    _worker["claims"] = claims


def _exit_with(parent: int, every: float = PARENT_CHECK) -> None:
    """End the worker once the server that started it is gone. A server killed (SIGKILL, the
    OOM killer, a crash) cannot shut its pool down, and the worker holds both ends of its call
    queue, so it would wait for a call forever: ~80 MB a restart, seen as 115 orphans after a
    few test runs. Reparented means the parent is gone."""
    while os.getppid() == parent:
        time.sleep(every)
    os._exit(0)


def pack(sub: Submission) -> Packed:
    """A validated submission as a Packed one (its payload is byte for byte `inbox_payload(sub)`)."""
    esi = sub.esi or {}
    payload = encode_ascii({"id": sub.killmail_id, "hash": sub.killmail_hash, "esi": sub.esi, "zkb": sub.zkb})
    size = len(esi.get("attackers") or ()) + len((esi.get("victim") or {}).get("items") or ())
    players = array("q", sorted(player_ids(esi))).tobytes()
    return Packed(sub.killmail_id, sub.killmail_hash, {}, None, payload, size, players)


def parse_items(data: Any, max_items: int, can_fetch: bool) -> tuple[int, list[Submission], list[dict[str, Any]]] | str:
    """(number of items, valid submissions, rejected items with their errors), or why the whole
    body is refused ("413 …" / "400 …"). Shared by the worker and the in-process path."""
    items = data if isinstance(data, list) else [data]
    if isinstance(data, list) and not data:
        return "400 empty array: send one killmail or an array of killmails"
    if len(items) > max_items:
        return f"413 too many killmails in one request: {len(items)} > {max_items}"
    subs: list[Submission] = []
    rejected: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        try:
            sub = parse_submission(item)
        except Invalid as exc:
            rejected.append({"index": index, "errors": exc.errors})
            continue
        if sub.esi is None and not can_fetch:
            rejected.append(
                {
                    "index": index,
                    "errors": ["killmail: only id and hash given, and this server has no ESI access (upstream off)"],
                }
            )
            continue
        subs.append(sub)
    return len(items), subs, rejected


def _parse(body: bytes, max_items: int, can_fetch: bool) -> tuple[int, list[Submission], list[dict[str, Any]]] | str:
    """In the worker: a POST body parsed and validated; big kills come back Packed."""
    try:
        data = ujson.loads(body)
    except ValueError as exc:
        return f"400 body is not valid JSON: {exc}"
    parsed = parse_items(data, max_items, can_fetch)
    if isinstance(parsed, str):
        return parsed
    count, subs, rejected = parsed
    # Several kills (a catch-up's POST) come back as their inbox payloads, made here: the server
    # then neither unpickles their decoded bodies (~45 us a kill under its GIL) nor encodes each
    # payload twice (the inbox row, the call that hands the kill back here to be made).
    many = len(subs) > 1
    return count, [pack(s) if _size(s) > BIG_KILL or (many and s.esi is not None) else s for s in subs], rejected


def _keep_prices(prices: PriceBook | None) -> None:
    """In the worker: the prices a call carries (the first after a start or a refresh; None: the
    ones it has, Offload._prices_for)."""
    if prices is not None:
        _worker["prices"] = prices


def _repack(payload: bytes) -> Packed:
    """In the worker: an inbox row's payload (recovery) as a Packed submission."""
    return pack(from_payload(payload))


def _enrich(payload: bytes, names: Mapping[int, str], prices: PriceBook | None, facts: bool) -> Enriched:
    """In the worker: what pipeline._enrich and build_kill make of the kill, as bytes."""
    _keep_prices(prices)
    return enriched(from_payload(payload), _worker["static"], names, _worker["prices"], facts)


def _prepare(
    payloads: Sequence[bytes],
    names: Mapping[int, str],
    prices: PriceBook | None,
    facts: Sequence[bool],
    ticket: int = 0,
) -> bytes:
    """In the worker: a batch of ordinary kills (their inbox payloads) as `enriched` makes each,
    with its stored document packed as Store.pack_source does (the store refuses to open with
    any other dictionary than codec's); a kill that fails is the reason why, in its place. One
    marshal blob (`kills_of` reads it); empty if the server took the chunk back (`Claims`)."""
    _keep_prices(prices)  # first: a chunk taken back still brings the prices the calls behind it lack
    claims: Claims | None = _worker.get("claims")
    if ticket and claims is not None and not claims.claim(ticket):
        return b""
    if "dictionary" not in _worker:
        _worker["dictionary"] = load_dictionary()
    done: list[tuple[Any, ...] | str] = []
    for payload, wanted in zip(payloads, facts, strict=True):
        try:
            kill = enriched(from_payload(payload), _worker["static"], names, _worker["prices"], wanted)
            done.append(replace(kill, packed=pack_source(kill.source, _worker["dictionary"])).plain())
        except Exception as exc:  # one bad kill must not cost the batch; logged by the caller
            done.append(f"{type(exc).__name__}: {exc}")
    return marshal.dumps(done)


def _ready() -> bool:
    """In the worker: nothing; answered once the worker has started (Offload.ready)."""
    return True


def _players_of(killmail_id: int, killmail_hash: str, document: bytes) -> bytes:
    """In the worker: the player ids of a stored source document, as array("q") bytes."""
    sub, _ = decode(killmail_id, killmail_hash, document)
    return array("q", player_ids(sub.esi or {})).tobytes()


def _render(
    killmail_id: int, killmail_hash: str, document: bytes, names: Mapping[int, str], prices: PriceBook | None
) -> bytes:
    """In the worker: a stored source document as the kill's JSON (what Store.render gives)."""
    _keep_prices(prices)
    sub, frozen = decode(killmail_id, killmail_hash, document)
    return renderer(_worker["static"], _worker["prices"])(sub, names, frozen)


def enriched(sub: Submission, static: StaticData, names: Mapping[int, str], prices: PriceBook, facts: bool) -> Enriched:
    kill = enrich(sub, static, names, prices)
    when = parse_time(kill["kill_time"])
    assert when is not None
    rows = participation(kill)
    # Plain ints: marshal takes no IntEnum (Kind), and it loads ~3x faster than pickle.
    entities = tuple((int(kind), i, code) for kind, i, code in rows.entities)
    return Enriched(
        kill_time=int(when.timestamp()),
        system_id=kill["system_id"],
        total_value=kill["total_value"],
        body=encode(kill),
        source=source_document(sub.esi or {}, sub.zkb, kill_prices(kill)),
        participation=marshal.dumps((rows.pilots, entities, pack_pilots(rows.pilots))),
        facts=kill_facts(kill) if facts else None,
    )


def new_kill(
    sub: Submission, done: Enriched, names: Mapping[int, str], pack: Callable[[bytes], bytes] | None = None
) -> NewKill:
    """The NewKill pipeline.build_kill makes, from the worker's bytes (no enriched object: a
    language variant decodes the body, as for a kill read back)."""
    packed = done.packed or (pack(done.source) if pack is not None else b"")
    ids = (sub.player_ids() if isinstance(sub, Packed) else player_ids(sub.esi or {})) if names else ()
    return NewKill(
        killmail_id=sub.killmail_id,
        killmail_hash=sub.killmail_hash,
        kill_time=done.kill_time,
        system_id=done.system_id,
        total_value=done.total_value,
        _body=done.body,
        source=done.source,
        names={i: names[i] for i in ids if i in names} if names else {},
        participation=done.rows(),
        packed=packed,
    )


def _size(sub: Submission) -> int:
    esi = sub.esi or {}
    return len(esi.get("attackers") or ()) + len((esi.get("victim") or {}).get("items") or ())


# ---- in the server process ---------------------------------------------------------------------


@dataclass(slots=True)
class Call(Generic[T]):
    """A call handed to the worker process, not yet answered."""

    pool: ProcessPoolExecutor
    future: Future[T]
    waiter: asyncio.Future[T] = field(init=False)
    # A chunk's (Offload.prepare): its ticket and the claims it can be taken back with.
    claims: Claims | None = None
    ticket: int = 0
    # Told of the pool's death when nobody awaits the answer (Offload._died).
    died: Callable[[ProcessPoolExecutor], None] | None = None
    at: float = field(default_factory=time.monotonic)  # when it was handed over

    def __post_init__(self) -> None:
        self.waiter = asyncio.wrap_future(self.future)

    def cancel(self) -> bool:
        """Take a chunk back: True while the worker has not started it, and then it makes
        nothing of it (it still gets the call: `_prepare`). Never blocks the loop."""
        if self.claims is None or not self.claims.claim(self.ticket, block=False):
            return False
        # Nobody awaits it now: what it ends with (b"") is not news, but a dead worker is: when
        # every chunk of a batch was taken back, this is how its death is found before the next.
        self.waiter.add_done_callback(self._ended)
        return True

    def _ended(self, waiter: asyncio.Future[T]) -> None:
        if waiter.cancelled():
            return
        if isinstance(waiter.exception(), BrokenProcessPool) and self.died is not None:
            self.died(self.pool)


def _processes(pool: ProcessPoolExecutor | None) -> dict[int, Any]:
    """A pool's worker processes by pid (its `_processes`: no public API)."""
    return getattr(pool, "_processes", None) or {}


def _pids(pool: ProcessPoolExecutor | None) -> list[int]:
    return list(_processes(pool))


def _sentinels(pool: ProcessPoolExecutor) -> list[int]:
    """The fds that become readable when a pool's workers end (Process.sentinel)."""
    return [proc.sentinel for proc in _processes(pool).values()]


def _kill(pids: Sequence[int]) -> None:
    for pid in pids:
        with suppress(OSError):  # gone already
            os.kill(pid, signal.SIGKILL)


def _unstick(pool: ProcessPoolExecutor) -> None:
    """Close this process's copy of the pipe a dead pool's worker answered through.

    Python 3.11's pool reads each answer whole in its manager thread: a worker killed halfway
    through writing one (a big answer, the OOM killer) left that thread waiting for the rest for
    ever, since this process holds the pipe's other end too. The pool then never found its worker
    dead, its calls waited for `STUCK`, and `close()` (its shutdown joins that thread) never
    ended. With this end closed the read ends (EOFError), and the pool breaks as for any death.
    Only workers write to it, so this is for a pool whose worker is gone."""
    writer = getattr(getattr(pool, "_result_queue", None), "_writer", None)
    if writer is not None:
        with suppress(OSError):
            writer.close()


@dataclass(slots=True)
class Offload:
    """The worker process, from the server's side: started on first use, replaced if it died."""

    data_dir: Path
    _pool: ProcessPoolExecutor | None = None
    _prices: object = None  # the PriceBook.market the worker has (a refresh replaces the dict)
    _warming: Future[bool] | None = None  # Offload.ready's start-up call to the current worker
    _claims: Claims | None = None  # shared with the current worker (its chunks' tickets)
    _tickets: int = 0  # chunks handed over so far, to any worker
    started: int = 0  # workers started (tests)
    lost: int = 0  # workers found dead
    stuck: int = 0  # workers killed for not answering within `stuck_after`
    closed: bool = False  # after close(): every call answers None (done in-process)
    stuck_after: float = STUCK
    # The current worker's sentinels, watched on the loop (`_watch`), and the loop watching them.
    _watched: list[int] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            context = multiprocessing.get_context("spawn")  # fork is unsafe with aiosqlite's threads
            self._claims = Claims(context)  # a new worker's own: a dead one may have held the lock
            self._pool = ProcessPoolExecutor(
                1, mp_context=context, initializer=_start, initargs=(self.data_dir, os.getpid(), self._claims)
            )
            self._prices = None
            self._warming = None
            self.started += 1
        return self._pool

    async def call(self, fn: Callable[..., T], *args: Any) -> T | None:
        """`fn(*args)` in the worker, or None if the worker died (the caller does it here)."""
        handed = self.submit(fn, *args)
        if handed is None:
            return None
        answered: T | None = await self.answer(handed)
        return answered

    def submit(self, fn: Callable[..., T], *args: Any) -> Call[T] | None:
        """`fn(*args)` handed to the worker (in order), or None if it is closed or found dead."""
        if self.closed:
            return None
        pool = self._executor()
        try:
            handed = Call(pool, pool.submit(fn, *args), died=self._died)
        except BrokenProcessPool:
            self._died(pool)
            return None
        self._watch(pool)
        return handed

    def _watch(self, pool: ProcessPoolExecutor) -> None:
        """Once the pool's worker runs (its first call starts it): be told on the loop when it
        ends, whatever ends it (`_worker_ended`). No thread: a reader on its sentinel."""
        if self._watched:
            return
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:  # not on a loop: the pool's own manager thread finds deaths
            return
        for fd in _sentinels(pool):
            self._loop.add_reader(fd, self._worker_ended, pool)
            self._watched.append(fd)

    def _unwatch(self) -> None:
        watched, self._watched = self._watched, []
        if self._loop is not None and not self._loop.is_closed():
            for fd in watched:
                self._loop.remove_reader(fd)

    def _worker_ended(self, pool: ProcessPoolExecutor) -> None:
        """The current worker ended (killed, crashed, out of memory): its pool is made to
        notice even if the worker died halfway through an answer (`_unstick`); its calls then
        break and are done here (`_died`, through them or the next call)."""
        self._unwatch()
        if pool is self._pool:
            _unstick(pool)

    async def answer(self, handed: Call[T]) -> T | None:
        """What the worker made of a submitted call, or None if it died (the caller does it here).
        A worker that has not answered within `stuck_after` is killed (then it died)."""
        try:
            left = self.stuck_after - (time.monotonic() - handed.at)
            done, _ = await asyncio.wait({handed.waiter}, timeout=max(0.0, left))
            if not done:
                self.overdue(handed)
            return await handed.waiter
        except BrokenProcessPool:
            self._died(handed.pool)
            return None
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise  # this task is being cancelled (a shutdown)
            return None  # cancelled by `_died`'s shutdown of a dead worker's pool: made here

    def overdue(self, handed: Call[Any]) -> None:
        """Kill the worker if `handed` has waited `stuck_after` for it. A worker that does not
        answer (stopped, deadlocked) holds its calls forever, and a POST or a batch waiting on
        one with them: killed, its pool breaks, and every call waiting on it is done here
        (`_died`), as when it crashes."""
        pool = handed.pool
        if time.monotonic() - handed.at < self.stuck_after or self._pool is not pool or handed.future.done():
            return  # not yet; or already found dead and replaced (its breaking answers the call)
        _kill(_pids(pool))
        self.stuck += 1
        log.warning("the big-kill worker process did not answer in %.0f s: killed", self.stuck_after)
        self._died(pool)  # now, not when its pool's manager thread notices: once, however many wait

    def _died(self, pool: ProcessPoolExecutor) -> None:
        if self._pool is pool:  # once a death, however many calls were waiting on it
            self._pool = None
            self.lost += 1
            log.warning("the big-kill worker process died: its kills are done in this process, a new one starts")
            self._unwatch()
            _unstick(pool)  # dead (or killed by `overdue`): its manager thread must not wait on it
            pool.shutdown(wait=False, cancel_futures=True)

    def ready(self) -> bool:
        """Whether the worker is up now; if not, it is started in the background (a batch does
        not wait ~0.3 s for it: the pipeline prepares that one here)."""
        if self.closed:
            return False
        pool = self._executor()
        if self._warming is None:
            self._warming = pool.submit(_ready)
        if not self._warming.done():
            return False
        if self._warming.exception() is not None:
            self._died(pool)
            return False
        return True

    def prepare(
        self,
        payloads: Sequence[bytes],
        names: Mapping[int, str],
        prices: PriceBook,
        facts: Sequence[bool],
    ) -> Call[bytes] | None:
        """Ordinary kills (their inbox payloads) handed to the worker (`_prepare`): await
        `answer` (and read it with `kills_of`), or `cancel` while the worker has not started on
        them; None if it died."""
        sent = self._prices_for(prices)
        self._tickets += 1
        handed = self.submit(_prepare, payloads, names, sent, facts, self._tickets)
        if handed is not None:
            handed.claims, handed.ticket = self._claims, self._tickets
        return handed

    async def parse(
        self, body: bytes, max_items: int, can_fetch: bool
    ) -> tuple[int, list[Submission], list[dict[str, Any]]] | str | None:
        return await self.call(_parse, body, max_items, can_fetch)

    async def repack(self, payload: bytes) -> Packed | None:
        return await self.call(_repack, payload)

    async def enrich(self, sub: Packed, names: Mapping[int, str], prices: PriceBook, facts: bool) -> Enriched | None:
        ids = sub.player_ids()
        wanted = {i: n for i, n in names.items() if i in ids} if len(names) > len(ids) else names
        return await self.call(_enrich, sub.payload, wanted, self._prices_for(prices), facts)

    async def render(
        self,
        prices: PriceBook,
        killmail_id: int,
        killmail_hash: str,
        document: bytes,
        names: Callable[[set[int]], Awaitable[dict[int, str]]],
    ) -> bytes | None:
        """A stored fleet fight's JSON (Store.render_big), or None if the worker died."""
        ids = await self.call(_players_of, killmail_id, killmail_hash, document)
        if ids is None:
            return None
        known = await names(set(array("q", ids))) if ids else {}
        return await self.call(_render, killmail_id, killmail_hash, document, known, self._prices_for(prices))

    def _prices_for(self, prices: PriceBook) -> PriceBook | None:
        """The prices to send with a call: once, and again after a refresh or to a new worker.
        Calls run in order, so the first one carrying them sets them for those behind it."""
        if not self.closed:
            self._executor()  # first: a new worker has no prices yet
        sent = None if self._prices is prices.market else prices
        self._prices = prices.market
        return sent

    def pid(self) -> int | None:
        """The worker's process id, if it runs (tests)."""
        return next(iter(_pids(self._pool)), None)

    async def close(self) -> None:
        self.closed = True
        pool, self._pool = self._pool, None
        self._unwatch()
        if pool is None:
            return
        pids = _pids(pool)
        ending = asyncio.ensure_future(asyncio.to_thread(pool.shutdown, True, cancel_futures=True))
        if not (await asyncio.wait({ending}, timeout=CLOSE_WAIT))[0]:
            log.warning("the big-kill worker process did not end in %.0f s: killed", CLOSE_WAIT)
            _kill(pids)  # what it held stays in the inbox for the next start
        await ending
