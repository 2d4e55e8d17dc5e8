"""Who is subscribed to what, and delivery of each kill frame to them.

Subscriptions are conditions (killboard/kill/topics.py) filed in one index: a kill is matched by
looking up the keys it has, and each matching socket gets it once however many of its channels
match. Every socket gets one writer task fed by a bounded queue, so a slow reader only ever fills its
own queue; when it overflows, that client is closed with 1013 and the others never wait for it
(see python-websockets' essay on broadcast). The bound is in bytes: what a socket holds (its
outbox, the live kills held back during its replay, and what its transport has not yet handed
to the kernel) may not pass `send_buffer` (KILLBOARD_WS_SEND_BUFFER); a deflated frame counts
by its size on the wire. A socket with nothing queued or in flight (the common case) takes
neither: its frames are kept in `pending` and written to its transport once per turn of the
loop (`_flush`, one write or writelines per socket however many kills were due). A kill is
encoded once and the same bytes go to every subscriber of a kind: each variant (names in the
languages a socket asked for, plain or permessage-deflated: killboard/live/wire.py) is made once
per kill, and its frame header is put in front of it once for all its sockets (`_wire`).

However many sockets subscribe, no step of the loop does more than a slice of the work: publish
gives at most SEND_SLICE sockets their frame in a step (the rest of a kill, and every kill behind
it, wait for the one delivery task, killboard/live/delivery.py, which goes on SEND_SLICE sockets a
step), and the flush writes FLUSH_SLICE sockets (FLUSH_BYTES) a step. A socket's frames stay in
order: a kill queued is delivered whole before the next, and a writer task writes its socket's
pending frames before anything of its own.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Collection
from contextlib import suppress
from functools import partial
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from ..ingest.pipeline import Stored
from ..kill.frames import encode
from ..kill.langs import Langs, covering
from ..kill.topics import MEMBERSHIP_BYTES, Condition, Index, KillFacts, condition_bytes
from ..logs import Throttled
from .delivery import DeliveryTask
from .slices import FLUSH_BYTES, FLUSH_SLICE, PLAIN, SEND_SLICE, WHOLE_LATE_BYTES, Queued
from .subscriber import Delivered, Outbox, Subscriber, idle, pend, raw_socket, send_frames
from .wire import (
    OFFLOAD_BYTES,
    RSV1,
    Deflated,
    KillVariants,
    frame_header,
    send_deflated,
)

log = logging.getLogger(__name__)


class Hub:
    """All live sockets (a weak set, as designed) and the channel -> subscribers index."""

    def __init__(
        self,
        send_queue: int,
        close_timeout: float,
        replay_window: int = 1000,
        send_buffer: int = 4 * 1024 * 1024,
        deflate_level: int = 6,
        sub_budget: int = 320 * 1024,
        sub_total: int = 224 * 1024 * 1024,
    ) -> None:
        """`sub_budget`: bytes one socket's subscriptions may cost; `sub_total`: bytes the
        subscriptions of all sockets may hold (each distinct condition once, plus a membership
        per socket and condition): see `subscribe`."""
        self.sockets: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()
        # Connections whose handler has ended but which are not closed yet (see linger).
        self._closing: set[asyncio.BaseProtocol] = set()
        self._subscribers: dict[web.WebSocketResponse, Subscriber] = {}
        self._index: Index[Subscriber] = Index()
        self._send_queue = send_queue
        self.send_buffer = send_buffer
        self.sub_budget = sub_budget
        self.sub_total = sub_total
        self._close_timeout = close_timeout
        self._replay_window = replay_window
        # Match keys of the last kills published, so a replay need not decode them again.
        self.recent_facts: OrderedDict[int, KillFacts] = OrderedDict()
        self.deliveries = 0
        self.slow_drops = 0
        self.sub_refused = 0  # subscriptions refused because all sockets' subscriptions were full
        self.sub_full_logged = False
        # Lines about sockets closed or refused (here and in web/ws.py): a few as they come,
        # then a summary a second, so 1,000 clients dropped at once are not 1,000 lines.
        self.closings = Throttled(log, "closed", "websocket clients")
        # Clients' protocol errors (web/ws.py: a few lines a socket), summed up the same way: a
        # crowd of broken clients makes a few lines a second, not lines per client.
        self.client_errors = Throttled(log, "had", "websocket client errors")
        self._deflate_level = deflate_level
        # Frames made for live kills (each variant of each kill counts once): bounded per kill
        # by the canonical variants, whatever the clients ask for.
        self.variants_made = 0
        # Every socket by the kind of frame it takes (Subscriber.variant): a kill's sockets are
        # grouped with set intersections, not a Python step per socket.
        self._by_variant: dict[tuple[Langs, int], set[Subscriber]] = {}
        # Sockets per step: given a frame by publish or the delivery task, written by the flush.
        self.send_slice = SEND_SLICE
        self.flush_slice = FLUSH_SLICE
        # Bumped when a socket unsubscribes, goes, or begins or ends a replay: a queued kill
        # published before that looks up again who still wants it (else its sockets as matched).
        self.changes = 0
        # Kills waiting for the delivery task (killboard/live/delivery.py), and the task.
        self.late = DeliveryTask(self)
        # Sockets with frames in `pending`, written by `_flush` (scheduled once per turn).
        self._due: list[Subscriber] = []
        # The last payload framed (`_wire`): a broadcast frames each variant once, not per socket.
        self._framed: tuple[bytes, bytes] | None = None
        # Frames written straight to transports (the fast path) and through a writer task (a
        # socket behind, paused or in a replay hand-over): how often the slow path is taken.
        self.direct_writes = 0
        self.queued_writes = 0
        self.transport_writes = 0  # write/writelines calls of the fast path (<= direct_writes)

    def __len__(self) -> int:
        """Open sockets, those still closing included: every one holds a descriptor and memory."""
        closing = self._closing
        if closing:
            closing.difference_update([p for p in closing if getattr(p, "transport", None) is None])
        return len(self.sockets) + len(closing)

    def linger(self, protocol: asyncio.BaseProtocol | None) -> None:
        """A socket's handler has ended; its connection may not be gone. aiohttp closes the
        transport after a close frame, or when the heartbeat gives up, and a transport's close
        waits until its buffer is flushed: to a peer that stopped reading, never. Such a
        connection keeps counting as open until it is gone, and is aborted after close_timeout."""
        if protocol is None or protocol in self._closing or getattr(protocol, "transport", None) is None:
            return
        self._closing.add(protocol)
        asyncio.get_running_loop().call_later(self._close_timeout, self._reap, protocol)

    def _reap(self, protocol: asyncio.BaseProtocol) -> None:
        self._closing.discard(protocol)
        transport = getattr(protocol, "transport", None)
        if transport is not None:
            log.debug("websocket connection could not finish closing in time: aborted")
            transport.abort()

    @property
    def sub_bytes(self) -> int:
        """What all sockets' subscriptions hold now (the index's bytes)."""
        return self._index.nbytes

    def subscribed_count(self) -> int:
        # By socket, not by walking the index: 10,000 sockets of 256 channels are 2.5 million
        # memberships, and /health asks.
        return sum(1 for sub in self._subscribers.values() if sub.channels)

    def subscribed(self) -> set[Subscriber]:
        """Every socket with at least one channel (a notice that concerns them all)."""
        return {sub for sub in self._subscribers.values() if sub.channels}

    def attach(
        self, ws: web.WebSocketResponse, transport: asyncio.Transport | None, lang: Langs = None, deflate: int = 0
    ) -> Subscriber:
        """`lang`: the languages of its names (None: all), served as the canonical variant that
        covers them (langs.covering); `deflate`: the window bits of its permessage-deflate (0:
        plain frames)."""
        sub = Subscriber(
            ws,
            Outbox(self._send_queue),
            transport,
            delivered=Delivered(self._replay_window),
            lang=covering(lang),
            deflate=deflate,
        )
        sub.variant = (sub.lang, sub.deflate)
        sub.sock = raw_socket(transport)
        if sub.sock is not None:
            sub.unsent = getattr(transport, "_buffer", None)
            if sub.unsent is None:  # not the asyncio we know: its own methods then
                sub.sock = None
        self.sockets.add(ws)
        self._subscribers[ws] = sub
        self._by_variant.setdefault(sub.variant, set()).add(sub)
        sub.writer = asyncio.create_task(self._write(sub), name="ws-writer")
        return sub

    async def detach(self, sub: Subscriber) -> None:
        """Forget a socket whose handler is ending; stop its writer."""
        self.changes += 1
        for condition in sub.channels:
            self._index.remove(condition, sub)
        sub.channels.clear()
        sub.sub_bytes = 0
        sub.held, sub.held_bytes = None, 0
        self._subscribers.pop(sub.ws, None)
        self.sockets.discard(sub.ws)
        kind = self._by_variant.get(sub.variant)
        if kind is not None:
            kind.discard(sub)
            if not kind:
                del self._by_variant[sub.variant]
        if sub.writer is not None and not sub.writer.done():
            sub.writer.cancel()
            with suppress(asyncio.CancelledError):
                await sub.writer

    def subscribe(self, sub: Subscriber, condition: Condition) -> str | None:
        """Add a channel; None, or why it was refused (a budget: the client is told, and the
        server holds nothing more). A socket is charged each condition whole, shared or not, so
        what it may hold does not depend on other sockets; the total counts the shared
        instances once, and is what the memory really holds."""
        if condition in sub.channels:
            return None
        charge = MEMBERSHIP_BYTES + condition_bytes(condition)
        if sub.sub_bytes + charge > self.sub_budget:
            return (
                f"subscriptions over budget: a socket's channels may take {self.sub_budget} bytes,"
                f" this one would take {sub.sub_bytes + charge}; unsub some, or use fewer conditions"
            )
        added = MEMBERSHIP_BYTES if self._index.find(condition) is not None else charge
        if self._index.nbytes + added > self.sub_total:
            if not self.sub_full_logged:
                log.warning("subscriptions refused: all sockets' channels hold %d bytes", self._index.nbytes)
                self.sub_full_logged = True
            self.sub_refused += 1
            return "the server's subscriptions are full: try again later, or subscribe to channels others use"
        self.sub_full_logged = False
        sub.channels.add(self._index.add(condition, sub))
        sub.sub_bytes += charge
        return None

    def unsubscribe(self, sub: Subscriber, condition: Condition) -> None:
        if condition in sub.channels:
            self.changes += 1
            sub.channels.discard(condition)
            sub.sub_bytes -= MEMBERSHIP_BYTES + condition_bytes(condition)
            self._index.remove(condition, sub)

    def hold(self, sub: Subscriber) -> None:
        """Keep this socket's live kills back (a replay is about to run) instead of sending them."""
        if sub.held is None:
            sub.held = deque()
            self.changes += 1

    def release(self, sub: Subscriber) -> None:
        """A replay has handed over: live kills go to the socket again."""
        sub.held, sub.held_bytes = None, 0
        self.changes += 1

    def held_bytes(self, sub: Subscriber) -> int:
        """What one socket holds now: its outbox, its held live kills and its transport's unsent
        bytes (where a client that never reads piles them up once its kernel buffers are full)."""
        transport = sub.transport
        # Duck-typed: uvloop's transports are not asyncio.WriteTransport subclasses.
        unsent = transport.get_write_buffer_size() if transport is not None else 0
        return sub.outbox.nbytes + sub.held_bytes + sub.pending_bytes + sub.answers + unsent

    def fits(self, sub: Subscriber, size: int) -> bool:
        """Whether `size` more bytes keep the socket within its budget. A socket that holds
        nothing takes any one frame, so a kill larger than the budget still reaches everyone."""
        held = self.held_bytes(sub)
        return held == 0 or held + size <= self.send_buffer

    def send(self, sub: Subscriber, frame: bytes, size: int | None = None) -> bool:
        """Queue one frame (`size` bytes on the wire, len(frame) unless given) for a socket;
        False (and the client is dropped with 1013) when it would pass its queue or byte budget."""
        if sub.dropped:
            return False
        if size is None:
            size = len(frame)
        if sub.outbox.empty() and not sub.sending:
            # Nothing queued or being sent: the frame joins this turn's write to the transport.
            pending = sub.pending
            if pending is not None:
                count = len(pending) if isinstance(pending, list) else 1
                if count < self._send_queue and sub.pending_bytes + size <= self.send_buffer:
                    pend(sub, pending, self._wire(frame), size)
                    self.direct_writes += 1
                    return True
                # A turn with more than a budget of kills: what is pending goes to the kernel
                # now (in order), and the budget counts only what the transport cannot take.
                self._write_pending(sub)
                if idle(sub):
                    sub.pending, sub.pending_bytes = self._wire(frame), size  # still in _due
                    self.direct_writes += 1
                    return True
            elif idle(sub):
                sub.pending, sub.pending_bytes = self._wire(frame), size
                if not self._due:
                    asyncio.get_running_loop().call_soon(self._flush)
                self._due.append(sub)
                self.direct_writes += 1
                return True
        self.queued_writes += 1
        if not self.fits(sub, size):
            self.drop(sub, WSCloseCode.TRY_AGAIN_LATER, b"send buffer full: client reads too slowly")
            return False
        try:
            sub.outbox.put_nowait(frame, size)
        except asyncio.QueueFull:
            self.drop(sub, WSCloseCode.TRY_AGAIN_LATER, b"send queue overflow: client reads too slowly")
            return False
        return True

    def _wire(self, frame: bytes) -> bytes:
        """The whole frame (header + payload) for a payload: made once for all the sockets a
        broadcast sends the same payload object to (a one-entry memo, cleared every turn)."""
        framed = self._framed
        if framed is not None and framed[0] is frame:
            return framed[1]
        wire = frame_header(len(frame), RSV1 if type(frame) is Deflated else 0) + frame
        self._framed = (frame, wire)
        return wire

    def _flush(self) -> None:
        """Write due sockets' pending frames to their transports: one call per socket per turn,
        of bytes shared by all sockets (uvloop's writelines is a writev: no copy). At most
        `flush_slice` sockets and FLUSH_BYTES a step: the rest in the next step, after whatever
        else the loop has to do (10,000 sockets in one step held it ~100 ms). A socket that
        closed meanwhile gets nothing (no frame may follow a close frame)."""
        due = self._due
        if len(due) > self.flush_slice:
            due, self._due = due[: self.flush_slice], due[self.flush_slice :]
            asyncio.get_running_loop().call_soon(self._flush)  # the rest, next step
        else:
            self._due = []
        self._framed = None
        written = writes = 0
        for i, sub in enumerate(due):
            pending = sub.pending
            if pending is None:  # dropped, or written by its writer task meanwhile
                continue
            if written >= FLUSH_BYTES:  # large frames: the rest next step, in the same order
                self._later(due[i:])
                break
            written += sub.pending_bytes
            sock = sub.sock
            # With a socket, the transport is asyncio's own (raw_socket): its `_closing` is what
            # is_closing() returns, and `_closed` what the WebSocketResponse's `closed` does;
            # read as attributes, not two Python calls a socket (~15% of the flush's Python).
            if (
                sock is None  # not asyncio's own transport: _write_pending uses its methods
                or type(pending) is not bytes
                or sub.unsent
                or sub.ws._closed
                or sub.transport._closing  # type: ignore[union-attr]
            ):
                self._write_pending(sub)  # (which writes nothing to a closing socket)
                continue
            # _write_pending's common case written out: one frame, all taken by the kernel.
            try:
                sent = sock.send(pending)
            except OSError:
                sent = 0
            if sent == len(pending):
                sub.pending, sub.pending_bytes = None, 0
                writes += 1
            else:  # the rest (or the error) through the transport, as _write_pending does
                sub.pending = pending[sent:]
                self._write_pending(sub)
        self.transport_writes += writes

    def _later(self, subs: list[Subscriber]) -> None:
        """Sockets the flush leaves for its next step, ahead of those due since."""
        if not self._due:
            asyncio.get_running_loop().call_soon(self._flush)
        self._due[:0] = subs

    def _write_pending(self, sub: Subscriber) -> None:
        pending = sub.pending
        sub.pending, sub.pending_bytes = None, 0
        transport = sub.transport
        if pending is None or transport is None or transport.is_closing() or sub.ws.closed:
            return
        self.transport_writes += 1
        try:
            sock = sub.sock
            if sock is not None and not sub.unsent:
                # asyncio's write() would do the same send() behind a dozen checks: the frames
                # go to the kernel here, and only what it did not take (a partial write, or
                # an error, which the transport then meets and handles) goes to the transport,
                # which keeps it in order behind what was sent.
                if isinstance(pending, list):
                    send_frames(sock, transport, pending)
                else:
                    try:
                        sent = sock.send(pending)
                    except OSError:
                        sent = 0
                    if sent < len(pending):
                        transport.write(memoryview(pending)[sent:] if sent else pending)
            elif isinstance(pending, list):
                transport.writelines(pending)
            else:
                transport.write(pending)
        except (ConnectionError, RuntimeError) as exc:
            # The connection went between the check and the write: its handler ends on its
            # own; the other sockets of this turn must still be written.
            log.debug("websocket write failed: %r", exc)

    async def put(self, sub: Subscriber, frame: bytes, size: int | None = None) -> None:
        """Queue a frame, waiting until the socket has room for it (a replay may be longer than
        the budget); the caller bounds the wait."""
        if size is None:
            size = len(frame)
        while not sub.dropped and (sub.outbox.full() or not self.fits(sub, size)):
            # The transport's buffer drains without touching the outbox: look again now and then.
            with suppress(TimeoutError):
                async with asyncio.timeout(0.25):
                    await sub.outbox.changed()
        if not sub.dropped:
            sub.outbox.put_nowait(frame, size)

    def send_json(self, sub: Subscriber, message: object) -> bool:
        return self.send(sub, encode(message))

    def send_behind_kills(self, sub: Subscriber, message: object) -> bool:
        """A control answer that must not overtake a kill published before it (a pong: a client
        may use ping as a barrier). Frames queued for the socket come first anyway (`send`);
        kills still waiting for the delivery task (a fleet fight, a burst, more sockets than a
        step takes) are not the socket's yet: the answer waits for them, in its byte budget."""
        frame = encode(message)
        if not self.late.entries:
            return self.send(sub, frame)
        if sub.dropped:
            return False
        if not self.fits(sub, len(frame)):
            self.drop(sub, WSCloseCode.TRY_AGAIN_LATER, b"send buffer full: client reads too slowly")
            return False
        self.late.hold_answer(sub, frame)
        return True

    def on_stored(self, stored: Stored) -> None:
        """The pipeline's hook: a stored live kill goes to its subscribers. NewKill's JSON is lazy:
        encoded only if some socket matches; the enriched object spares a decode for a socket that
        wants names in fewer languages."""
        if stored.live and stored.facts is not None:
            kill = stored.kill
            self.publish(stored.seq, lambda: kill.body, stored.facts, lambda: kill.enriched)

    def publish(
        self,
        seq: int,
        body: bytes | Callable[[], bytes],
        facts: KillFacts,
        decoded: Callable[[], Any] | None = None,
    ) -> int:
        """Send one stored kill to every socket with a matching channel, once each; returns the
        number queued. `facts` are the kill's match keys (topics.kill_facts). `body` may be a
        function that encodes it: called only when some socket matches. `decoded` may give the
        kill as an object (else a language variant decodes `body`, once per kill)."""
        self.recent_facts[seq] = facts
        if len(self.recent_facts) > self._replay_window:
            self.recent_facts.popitem(last=False)
        late = self.late
        if late.entries and (late.plain or PLAIN not in self._by_variant):
            # Behind a queued kill, whole (no socket of it could get it now): its sockets are
            # looked up by the delivery task, so a stored batch of many kills handed over in one
            # step does not hold the loop for a lookup of every socket per kill. Counted then.
            late.queue(Queued(KillVariants(seq, body, self._deflate_level, decoded), None, facts, 0, True, -1))
            return 0
        targets = self._index.match(facts)
        if not targets:
            return 0
        # Each variant (languages x plain or a deflate window) is made once, for all its sockets;
        # sockets ask only for canonical variants (langs.covering), so a kill has a few at most.
        kill = KillVariants(seq, body, self._deflate_level, decoded)
        groups = self._group(targets)
        size = len(kill.body())
        sent = 0
        # Plain sockets wanting every language need nothing made: they get the kill now, unless
        # it is a fleet fight (sent in slices, from the delivery task), a kill queued there has
        # plain sockets too (no overtaking), or this step has given out its frames already.
        plain = groups.get(PLAIN)
        if plain is not None and size < WHOLE_LATE_BYTES and not late.plain and late.room(len(plain)):
            del groups[PLAIN]
            sent += self._send_all(plain, seq, kill.frame(None), facts)
        if groups:
            sent += late.publish_variants(kill, groups, facts)
        else:
            self.variants_made += kill.made
        self.deliveries += sent
        return sent

    def _group(self, targets: set[Subscriber]) -> dict[tuple[Langs, int], Collection[Subscriber]]:
        """A kill's sockets by the kind of frame they take, with set intersections (C), not a
        Python step per socket; when every socket takes the same kind, the set as it is."""
        by_variant = self._by_variant
        if len(by_variant) == 1:
            return dict.fromkeys(by_variant, targets)
        groups: dict[tuple[Langs, int], Collection[Subscriber]] = {}
        for key, members in by_variant.items():
            group = targets & members
            if group:
                groups[key] = group
        return groups

    def _send_all(
        self,
        subs: Collection[Subscriber],
        seq: int,
        frame: bytes,
        facts: KillFacts,
        wanted: set[Subscriber] | None = None,
    ) -> int:
        """`send_kill` of one frame to many sockets; returns how many took it. `wanted`: skip the
        sockets not in it (gone or unsubscribed meanwhile) and those that already had the kill
        from a replay. This is the per-socket work of every kill, so the common case (an idle
        socket, or one with this turn's frames pending) is `send_kill` and `send` written out
        here, with the whole frame made once; anything else takes `send_kill` itself."""
        wire = frame_header(len(frame), RSV1 if type(frame) is Deflated else 0) + frame
        size = len(frame)
        due = self._due
        limit, budget = self._send_queue, self.send_buffer
        sent = direct = 0
        for sub in subs:
            if wanted is not None:
                if sub not in wanted or sub.dropped:
                    continue
                delivered = sub.delivered
                if delivered.his and seq <= delivered.his[-1] and seq in delivered:
                    continue
            pending = sub.pending
            if sub.held is not None or sub.dropped or sub.sending or sub.outbox._items:
                sent += self.send_kill(sub, seq, frame, facts)  # held for a replay, closing, or behind
                continue
            if pending is None:
                # idle(sub). On asyncio's own transport its buffer is read directly (its method
                # is a Python call), and a closing transport or socket is left to the flush,
                # which checks both before it writes (so does every other write): two Python
                # calls a socket less on every kill.
                unsent = sub.unsent
                if unsent or (unsent is None and not idle(sub)):
                    sent += self.send_kill(sub, seq, frame, facts)
                    continue
                sub.pending, sub.pending_bytes = wire, size
                if not due:  # the first of this turn (as in send)
                    asyncio.get_running_loop().call_soon(self._flush)
                due.append(sub)
            elif (len(pending) if isinstance(pending, list) else 1) < limit and sub.pending_bytes + size <= budget:
                pend(sub, pending, wire, size)
            else:
                sent += self.send_kill(sub, seq, frame, facts)
                continue
            # Delivered.add; its common case (the next kill after one run of seqs) written out.
            delivered = sub.delivered
            his = delivered.his
            if len(his) == 1 and his[0] + 1 == seq and delivered.window:
                his[0] = seq  # what add() does then: its trim keeps the only run (window > 0)
            else:
                delivered.add(seq)
            direct += 1
        self.direct_writes += direct
        return sent + direct

    async def replay_frame(self, sub: Subscriber, seq: int, body: bytes) -> bytes:
        """A stored kill's frame as this socket takes its kills (a replay): deflated on its own
        too, in a thread when large."""
        kill = KillVariants(seq, body, self._deflate_level)
        if sub.lang is None and (not sub.deflate or len(body) < OFFLOAD_BYTES):
            return kill.deflated(None, sub.deflate) if sub.deflate else kill.frame(None)
        # A language variant decodes the body (~0.3 ms), a large one deflates it: both in a
        # thread, so a replay of a thousand kills does not hold the loop for a second.
        make = partial(kill.deflated, sub.lang, sub.deflate) if sub.deflate else partial(kill.frame, sub.lang)
        return await asyncio.get_running_loop().run_in_executor(None, make)

    def send_kill(self, sub: Subscriber, seq: int, frame: bytes, facts: KillFacts) -> bool:
        """Queue a kill frame, or hold it back while the socket's replay runs."""
        if sub.held is None:
            if not self.send(sub, frame):
                return False
            sub.delivered.add(seq)
            return True
        if sub.dropped:
            return False
        if len(sub.held) >= self._send_queue or not self.fits(sub, len(frame)):
            self.drop(sub, WSCloseCode.TRY_AGAIN_LATER, b"too many live kills during the replay: reads too slowly")
            return False
        sub.held.append((seq, frame, facts))
        sub.held_bytes += len(frame)
        return True

    def close(self, sub: Subscriber, code: int, message: bytes) -> None:
        """Close one client on purpose (a policy violation): its writer sends what is queued
        (the error frame that explains why), then the close frame."""
        if not sub.dropped:
            text = message.decode()
            self.closings.log(logging.INFO, f"{code} {text}", "closing websocket client: %d %s", code, text)
            self._close(sub, code, message, keep_queued=True)

    def drop(self, sub: Subscriber, code: int, message: bytes) -> None:
        """Close a client that cannot keep up: empty its queue and let its writer send the close."""
        if sub.dropped:
            return
        self.slow_drops += 1
        text = message.decode()
        self.closings.log(logging.WARNING, f"{code} {text}", "closing slow websocket client (%s)", text)
        self._close(sub, code, message)

    def _close(self, sub: Subscriber, code: int, message: bytes, keep_queued: bool = False) -> None:
        """Ask the writer to send a close frame next, and cut the connection if it cannot."""
        sub.dropped = True
        sub.held, sub.held_bytes = None, 0
        if not keep_queued:
            sub.pending, sub.pending_bytes = None, 0  # a dropped client's frames are not sent
        sub.close_code, sub.close_message = code, message
        if not keep_queued:
            sub.outbox.clear()  # at once: a full outbox taken one by one was ~350 us a socket
        elif sub.outbox.full():
            sub.outbox.get_nowait()  # room for the close request
        sub.outbox.put_nowait(None)  # (also wakes a replay waiting for room: it sees the drop)
        # A writer stuck sending to a peer that stopped reading never reaches the close request.
        asyncio.get_running_loop().call_later(self._close_timeout * 2, _abort_if_stuck, sub, self.closings)

    async def _write(self, sub: Subscriber) -> None:
        """The only task that sends on this socket: one back-pressure gate, one writer."""
        ws = sub.ws
        try:
            while True:
                frame = await sub.outbox.get()
                if sub.pending is not None:
                    # Frames due for the flush came first: they go before this one (the flush
                    # writes in slices, so it may reach this socket only steps later).
                    self._write_pending(sub)
                if frame is None:
                    break
                sub.sending = True
                try:
                    if type(frame) is Deflated:
                        await send_deflated(ws, frame)
                    else:
                        await ws.send_frame(frame, WSMsgType.TEXT)
                finally:
                    sub.sending = False
        except (ConnectionError, RuntimeError):
            # The peer went away: reset (ConnectionResetError), or lost while we waited for a
            # drain (aiohttp raises a plain ConnectionError); RuntimeError: already closing.
            return
        # A dropped client that stopped reading cannot even take the close frame: give it a
        # moment, then cut the connection so its handler ends and the memory is freed.
        try:
            async with asyncio.timeout(self._close_timeout):
                await ws.close(code=sub.close_code, message=sub.close_message)
        except (TimeoutError, ConnectionError):
            if sub.transport is not None:
                sub.transport.abort()

    async def close_all(self, code: int = WSCloseCode.GOING_AWAY, message: bytes = b"server shutdown") -> None:
        """Close every socket at once, each with a time limit (close() waits on a stuck reader)."""
        self.late.stop()  # kills still waiting for the delivery task are in the store: a since replays them
        subs = list(self._subscribers.values())
        for sub in subs:
            if not sub.dropped:
                self._close(sub, code, message)
        writers = [s.writer for s in subs if s.writer is not None]
        if not writers:
            self.closings.flush()
            self.client_errors.flush()
            return
        # A stop has 5 s in all and the queue still has to drain after this: a client that
        # cannot take its close frame within close_timeout is cut now, not after 2x that
        # (_abort_if_stuck's patience is for a single slow client while we keep serving).
        _done, stuck = await asyncio.wait(writers, timeout=self._close_timeout)
        for sub in subs:
            if sub.writer in stuck and sub.transport is not None:
                sub.transport.abort()
        if stuck:
            log.warning("%d websocket clients did not take their close frame: connections aborted", len(stuck))
            await asyncio.wait(stuck, timeout=0.5)
        self.closings.flush()
        self.client_errors.flush()


def _abort_if_stuck(sub: Subscriber, closings: Throttled) -> None:
    if sub.writer is not None and not sub.writer.done() and sub.transport is not None:
        message = "websocket client did not take its close frame in time: connection aborted"
        closings.log(logging.WARNING, "close frame not taken: aborted", message)
        sub.transport.abort()
