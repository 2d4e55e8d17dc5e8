"""Who is subscribed to what, and delivery of each kill frame to them.

Subscriptions are conditions (killboard/topics.py) filed in one index: a kill is matched by
looking up the keys it has, and each matching socket gets it once however many of its channels
match. Every socket gets one writer task fed by a bounded queue, so a slow reader only ever fills its
own queue; when it overflows, that client is closed with 1013 and the others never wait for it
(see python-websockets' essay on broadcast). A socket with nothing queued or in flight gets the
frame written straight to its transport instead (`_write_now`). A kill is encoded once and the
same bytes go to every subscriber.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import weakref
from bisect import bisect_right
from collections import OrderedDict, deque
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field

import ujson
from aiohttp import WSCloseCode, WSMsgType, web

from .topics import Condition, Index, KillFacts

log = logging.getLogger(__name__)


class Delivered:
    """The seqs of the kills one socket was sent, over the last `window` seqs, as sorted runs
    (a broad channel gets consecutive seqs: one run). A replay skips what the socket already has."""

    __slots__ = ("his", "los", "window")

    def __init__(self, window: int) -> None:
        self.window = window
        self.los: list[int] = []
        self.his: list[int] = []

    def __contains__(self, seq: int) -> bool:
        i = bisect_right(self.los, seq) - 1
        return i >= 0 and seq <= self.his[i]

    def add(self, seq: int) -> None:
        los, his = self.los, self.his
        if his and seq == his[-1] + 1:
            his[-1] = seq  # the common case: the next kill in line
        elif not his or seq > his[-1] + 1:
            los.append(seq)
            his.append(seq)
        else:  # a replay sends older kills after newer live ones
            i = bisect_right(los, seq) - 1
            if i >= 0 and seq <= his[i]:
                return
            if i >= 0 and his[i] + 1 == seq:
                his[i] = seq
                if i + 1 < len(los) and los[i + 1] == seq + 1:
                    his[i] = his[i + 1]
                    del los[i + 1], his[i + 1]
            elif i + 1 < len(los) and los[i + 1] == seq + 1:
                los[i + 1] = seq
            else:
                los.insert(i + 1, seq)
                his.insert(i + 1, seq)
        old = bisect_right(his, his[-1] - self.window)
        if old:
            del los[:old], his[:old]


class Outbox:
    """The bounded FIFO of frames between the hub and one socket's writer.

    asyncio.Queue's interface as the hub and the replay use it, at a fraction of its memory:
    asyncio.Queue keeps three deques and an Event, ~3 KB per socket (tracemalloc), 15% of an idle
    subscriber. This is one list (usually 0 or 1 frames long, so popping the front is cheap) and
    one future, made only while the writer waits for a frame or a replay waits for room; the two
    never wait at once, since the outbox cannot be both empty and full.
    """

    __slots__ = ("_items", "_maxsize", "_waiter")

    def __init__(self, maxsize: int) -> None:
        self._items: list[bytes | None] = []
        self._maxsize = maxsize
        self._waiter: asyncio.Future[None] | None = None

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def full(self) -> bool:
        return len(self._items) >= self._maxsize

    def put_nowait(self, item: bytes | None) -> None:
        if len(self._items) >= self._maxsize:
            raise asyncio.QueueFull
        self._items.append(item)
        self._wake()

    def get_nowait(self) -> bytes | None:
        if not self._items:
            raise asyncio.QueueEmpty
        item = self._items.pop(0)
        self._wake()
        return item

    async def get(self) -> bytes | None:
        while not self._items:
            await self._wait()
        return self.get_nowait()

    async def put(self, item: bytes | None) -> None:
        while self.full():
            await self._wait()
        self.put_nowait(item)

    async def _wait(self) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            waiter = self._waiter = asyncio.get_running_loop().create_future()
        await waiter

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


@dataclass(eq=False, slots=True)
class Subscriber:
    """One connected socket: its channels, its bounded outbox and the task that drains it."""

    ws: web.WebSocketResponse
    outbox: Outbox
    transport: asyncio.BaseTransport | None
    # condition -> the channel string it was first subscribed with
    channels: dict[Condition, str] = field(default_factory=dict)
    # While a replay runs: live kills (seq, frame, match keys) held back until it has caught up.
    held: deque[tuple[int, bytes, KillFacts]] | None = None
    delivered: Delivered = field(default_factory=lambda: Delivered(0))
    writer: asyncio.Task[None] | None = None
    sending: bool = False  # the writer task is inside send_frame (perhaps waiting for a drain)
    close_code: int = WSCloseCode.OK
    close_message: bytes = b""
    dropped: bool = False


def encode(message: object) -> bytes:
    return ujson.dumps(message, ensure_ascii=False, escape_forward_slashes=False).encode()


def kill_frame(seq: int, body: bytes) -> bytes:
    """`{"action":"kill","seq":N,"data":{...}}` spliced around the kill's JSON, without re-encoding it."""
    return b'{"action":"kill","seq":%d,"data":%s}' % (seq, with_seq(seq, body))


def with_seq(seq: int, body: bytes) -> bytes:
    """The kill object with its sequence number as the first field."""
    return b'{"seq":%d,%s' % (seq, body[1:])


class Hub:
    """All live sockets (a weak set, as designed) and the channel -> subscribers index."""

    def __init__(self, send_queue: int, close_timeout: float, replay_window: int = 1000) -> None:
        self.sockets: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()
        self._subscribers: dict[web.WebSocketResponse, Subscriber] = {}
        self._index: Index[Subscriber] = Index()
        self._send_queue = send_queue
        self._close_timeout = close_timeout
        self._replay_window = replay_window
        # Match keys of the last kills published, so a replay need not decode them again.
        self.recent_facts: OrderedDict[int, KillFacts] = OrderedDict()
        self.deliveries = 0
        self.slow_drops = 0

    def __len__(self) -> int:
        return len(self.sockets)

    def subscribed_count(self) -> int:
        return len(self._index.subscribers())

    def subscribed(self) -> set[Subscriber]:
        """Every socket with at least one channel (a notice that concerns them all)."""
        return self._index.subscribers()

    def attach(self, ws: web.WebSocketResponse, transport: asyncio.BaseTransport | None) -> Subscriber:
        sub = Subscriber(ws, Outbox(self._send_queue), transport, delivered=Delivered(self._replay_window))
        self.sockets.add(ws)
        self._subscribers[ws] = sub
        sub.writer = asyncio.create_task(self._write(sub), name="ws-writer")
        return sub

    async def detach(self, sub: Subscriber) -> None:
        """Forget a socket whose handler is ending; stop its writer."""
        for condition in sub.channels:
            self._index.remove(condition, sub)
        sub.channels.clear()
        sub.held = None
        self._subscribers.pop(sub.ws, None)
        self.sockets.discard(sub.ws)
        if sub.writer is not None and not sub.writer.done():
            sub.writer.cancel()
            with suppress(asyncio.CancelledError):
                await sub.writer

    def subscribe(self, sub: Subscriber, condition: Condition, channel: str) -> None:
        if condition not in sub.channels:
            sub.channels[condition] = channel
            self._index.add(condition, sub)

    def unsubscribe(self, sub: Subscriber, condition: Condition) -> None:
        if sub.channels.pop(condition, None) is not None:
            self._index.remove(condition, sub)

    def hold(self, sub: Subscriber) -> None:
        """Keep this socket's live kills back (a replay is about to run) instead of sending them."""
        if sub.held is None:
            sub.held = deque()

    def send(self, sub: Subscriber, frame: bytes) -> bool:
        """Queue one frame for a socket; False (and the client is dropped) when its queue is full."""
        if sub.dropped:
            return False
        if sub.outbox.empty() and not sub.sending and _write_now(sub, frame):
            return True
        try:
            sub.outbox.put_nowait(frame)
        except asyncio.QueueFull:
            self.drop(sub, WSCloseCode.TRY_AGAIN_LATER, b"send queue overflow: client reads too slowly")
            return False
        return True

    def send_json(self, sub: Subscriber, message: object) -> bool:
        return self.send(sub, encode(message))

    def publish(self, seq: int, body: bytes | Callable[[], bytes], facts: KillFacts) -> int:
        """Send one stored kill to every socket with a matching channel, once each; returns the
        number queued. `facts` are the kill's match keys (topics.kill_facts). `body` may be a
        function that encodes it: called only when some socket matches."""
        self.recent_facts[seq] = facts
        if len(self.recent_facts) > self._replay_window:
            self.recent_facts.popitem(last=False)
        targets = self._index.match(facts)
        if not targets:
            return 0
        frame = kill_frame(seq, body if isinstance(body, bytes) else body())  # once, for every recipient
        sent = 0
        for sub in targets:
            if self.send_kill(sub, seq, frame, facts):
                sent += 1
        self.deliveries += sent
        return sent

    def send_kill(self, sub: Subscriber, seq: int, frame: bytes, facts: KillFacts) -> bool:
        """Queue a kill frame, or hold it back while the socket's replay runs."""
        if sub.held is None:
            if not self.send(sub, frame):
                return False
            sub.delivered.add(seq)
            return True
        if sub.dropped:
            return False
        if len(sub.held) >= self._send_queue:
            self.drop(sub, WSCloseCode.TRY_AGAIN_LATER, b"too many live kills during the replay: reads too slowly")
            return False
        sub.held.append((seq, frame, facts))
        return True

    def close(self, sub: Subscriber, code: int, message: bytes) -> None:
        """Close one client on purpose (a policy violation): its writer sends what is queued
        (the error frame that explains why), then the close frame."""
        if not sub.dropped:
            log.info("closing websocket client: %d %s", code, message.decode())
            self._close(sub, code, message, keep_queued=True)

    def drop(self, sub: Subscriber, code: int, message: bytes) -> None:
        """Close a client that cannot keep up: empty its queue and let its writer send the close."""
        if sub.dropped:
            return
        self.slow_drops += 1
        log.warning("closing slow websocket client (%s)", message.decode())
        self._close(sub, code, message)

    def _close(self, sub: Subscriber, code: int, message: bytes, keep_queued: bool = False) -> None:
        """Ask the writer to send a close frame next, and cut the connection if it cannot."""
        sub.dropped = True
        sub.held = None
        sub.close_code, sub.close_message = code, message
        while not sub.outbox.empty() and not (keep_queued and not sub.outbox.full()):
            sub.outbox.get_nowait()
        sub.outbox.put_nowait(None)
        # A writer stuck sending to a peer that stopped reading never reaches the close request.
        asyncio.get_running_loop().call_later(self._close_timeout * 2, _abort_if_stuck, sub)

    async def _write(self, sub: Subscriber) -> None:
        """The only task that sends on this socket: one back-pressure gate, one writer."""
        ws = sub.ws
        try:
            while True:
                frame = await sub.outbox.get()
                if frame is None:
                    break
                sub.sending = True
                try:
                    await ws.send_frame(frame, WSMsgType.TEXT)
                finally:
                    sub.sending = False
        except (ConnectionResetError, RuntimeError):
            return  # the peer went away (RuntimeError: socket already closing)
        # A dropped client that stopped reading cannot even take the close frame: give it a
        # moment, then cut the connection so its handler ends and the memory is freed.
        try:
            async with asyncio.timeout(self._close_timeout):
                await ws.close(code=sub.close_code, message=sub.close_message)
        except (TimeoutError, ConnectionResetError):
            if sub.transport is not None:
                sub.transport.abort()

    async def close_all(self, code: int = WSCloseCode.GOING_AWAY, message: bytes = b"server shutdown") -> None:
        """Close every socket at once, each with a time limit (close() waits on a stuck reader)."""
        subs = list(self._subscribers.values())
        for sub in subs:
            if not sub.dropped:
                self._close(sub, code, message)
        writers = [s.writer for s in subs if s.writer is not None]
        if not writers:
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


def _write_now(sub: Subscriber, frame: bytes) -> bool:
    """Send a text frame straight to an idle socket's transport; False if it must be queued.

    Most sockets are idle when a kill arrives: nothing queued, the writer task waiting, the
    kernel buffer empty. Waking the writer task for each of them cost more than the write itself
    (a task step and a future per socket per kill). Writing here only when the outbox is empty,
    the writer is not inside a send and the transport holds nothing unsent keeps the frames in
    order and the one-writer rule (the writer has nothing in flight); anything else (a socket
    behind, paused or closing) takes the outbox and its writer as before, so slow clients still
    fill their bounded outbox and are dropped. The bytes are what aiohttp's WebSocketWriter
    sends for an uncompressed server text frame (the server never compresses, see ws.py).
    """
    transport = sub.transport
    if (
        transport is None
        or sub.ws.closed
        or transport.is_closing()
        or not isinstance(transport, asyncio.WriteTransport)
        or transport.get_write_buffer_size()
    ):
        return False
    n = len(frame)
    if n < 126:
        header = _LEN1(0x81, n)
    elif n < 65536:
        header = _LEN2(0x81, 126, n)
    else:
        header = _LEN3(0x81, 127, n)
    transport.write(header + frame)
    return True


_LEN1 = struct.Struct("!BB").pack
_LEN2 = struct.Struct("!BBH").pack
_LEN3 = struct.Struct("!BBQ").pack


def _abort_if_stuck(sub: Subscriber) -> None:
    if sub.writer is not None and not sub.writer.done() and sub.transport is not None:
        log.warning("websocket client did not take its close frame in time: connection aborted")
        sub.transport.abort()
