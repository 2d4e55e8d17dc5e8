"""One connected socket as the hub sees it: its channels, its bounded outbox, the kills it was
sent, and the frames due to its transport this turn; and the checks the fast path makes on it."""

from __future__ import annotations

import asyncio
import socket
from asyncio import selector_events
from bisect import bisect_right
from collections import deque
from collections.abc import Sized
from dataclasses import dataclass, field

from aiohttp import WSCloseCode, web

from ..kill.langs import Langs
from ..kill.topics import Condition, KillFacts


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
    """The bounded FIFO of frames between the hub and one socket's writer, and their bytes.

    asyncio.Queue's interface as the hub and the replay use it, at a fraction of its memory:
    asyncio.Queue keeps three deques and an Event, ~3 KB per socket (tracemalloc), 15% of an idle
    subscriber. This is one list (usually 0 or 1 frames long, so popping the front is cheap) and
    one future, made only while the writer waits for a frame or a replay waits for room (both
    may wait on it at once: a frame put or taken wakes both, and each checks its own condition).

    Each frame is queued with its size on the wire, which is not always len(frame) (a frame
    may be a payload compressed elsewhere): `nbytes` is their sum.
    """

    __slots__ = ("_items", "_maxsize", "_waiter", "nbytes")

    def __init__(self, maxsize: int) -> None:
        self._items: list[tuple[bytes | None, int]] = []
        self._maxsize = maxsize
        self._waiter: asyncio.Future[None] | None = None
        self.nbytes = 0

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def full(self) -> bool:
        return len(self._items) >= self._maxsize

    def put_nowait(self, item: bytes | None, size: int = 0) -> None:
        if len(self._items) >= self._maxsize:
            raise asyncio.QueueFull
        self._items.append((item, size))
        self.nbytes += size
        self._wake()

    def get_nowait(self) -> bytes | None:
        if not self._items:
            raise asyncio.QueueEmpty
        item, size = self._items.pop(0)
        self.nbytes -= size
        self._wake()
        return item

    def clear(self) -> None:
        """Drop every queued frame (a client being dropped): one step, not a pop per frame."""
        self._items = []
        self.nbytes = 0
        self._wake()

    async def get(self) -> bytes | None:
        while not self._items:
            await self.changed()
        return self.get_nowait()

    async def changed(self) -> None:
        """Until a frame is put or taken."""
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
    transport: asyncio.Transport | None
    # Its conditions: the index's shared instances (an equal condition is held once in all).
    channels: set[Condition] = field(default_factory=set)
    # What its channels cost (topics.MEMBERSHIP_BYTES + condition_bytes each, as if no other
    # socket shared them): at most the hub's sub_budget (KILLBOARD_WS_SUB_BYTES).
    sub_bytes: int = 0
    # While a replay runs: live kills (seq, frame, match keys) held back until it has caught up,
    # and their bytes.
    held: deque[tuple[int, bytes, KillFacts]] | None = None
    held_bytes: int = 0
    delivered: Delivered = field(default_factory=lambda: Delivered(0))
    writer: asyncio.Task[None] | None = None
    # Whole frames (header and payload, shared by every socket of a kind) due to be written
    # straight to the transport by Hub._flush (this turn of the loop, or a few steps later when
    # many sockets are due; the writer task writes them first if it has to send), and their bytes.
    # One frame is kept as it is, several in a list: a list per socket per kill, alive until the
    # flush, made the garbage collector run every ~700 sockets of a broadcast.
    pending: bytes | list[bytes] | None = None
    pending_bytes: int = 0
    sending: bool = False  # the writer task is inside send_frame (perhaps waiting for a drain)
    # The socket under an asyncio selector transport (None on uvloop, TLS or a test's fake): a
    # fast-path write goes to it with one send() while the transport holds nothing unsent, past
    # the transport's Python write() (see Hub._write_pending).
    sock: socket.socket | None = None
    # That transport's buffer of unsent bytes (a bytearray, a deque from Python 3.12 on: empty or
    # not is all that is read), where get_write_buffer_size() would be a Python call per kill.
    unsent: Sized | None = None
    close_code: int = WSCloseCode.OK
    close_message: bytes = b""
    dropped: bool = False
    client_errors: int = 0  # error frames sent for bad client messages (ws.py logs the first few)
    # Bytes of answers (a pong) held until the kills queued before them are delivered
    # (DeliveryTask.hold_answer): they count in the socket's budget.
    answers: int = 0
    # What this socket's kill frames look like (killboard/live/wire.py): names in these languages
    # (None: all), deflated for this window (0: plain).
    lang: Langs = None
    deflate: int = 0
    variant: tuple[Langs, int] = (None, 0)  # (lang, deflate), made once: publish groups by it


def idle(sub: Subscriber) -> bool:
    """Whether a socket's transport can take a frame straight away: open, and holding nothing
    unsent. Most sockets are idle when a kill arrives; waking a writer task for each cost more
    than the write itself (a task step and a future per socket per kill). Writing straight only
    when the outbox is empty, the writer is not inside a send and the transport holds nothing
    unsent keeps the frames in order and the one-writer rule; anything else (a socket behind,
    paused or closing) takes the outbox and its writer, so slow clients still fill their bounded
    outbox and are dropped. The bytes are what aiohttp's WebSocketWriter sends for an
    uncompressed server text frame, with RSV1 set for a deflated one (wire.py)."""
    transport = sub.transport
    return (
        transport is not None
        and not transport.is_closing()
        and not transport.get_write_buffer_size()
        and not sub.ws.closed
    )


# asyncio's own TCP transport (typeshed does not list the class).
_SELECTOR_TRANSPORT: type = selector_events._SelectorSocketTransport  # type: ignore[attr-defined]


def pend(sub: Subscriber, pending: bytes | list[bytes], wire: bytes, size: int) -> None:
    """One more frame after those a socket already has pending this turn."""
    if isinstance(pending, list):
        pending.append(wire)
    else:
        sub.pending = [pending, wire]
    sub.pending_bytes += size


def raw_socket(transport: asyncio.Transport | None) -> socket.socket | None:
    """The socket under a plain asyncio selector transport (the default loop's TCP): None for
    anything else (uvloop's transports write in C already; TLS must go through its transport)."""
    if type(transport) is _SELECTOR_TRANSPORT:
        sock = getattr(transport, "_sock", None)
        return sock if isinstance(sock, socket.socket) else None
    return None


# Buffers one sendmsg() may gather (Linux's IOV_MAX); a turn's frames for one socket are fewer
# unless KILLBOARD_WS_SEND_QUEUE was raised past it.
IOV_MAX = 1024


def send_frames(sock: socket.socket, transport: asyncio.Transport, frames: list[bytes]) -> None:
    """Several whole frames (shared by every socket of a kind) to one socket with one gathering
    sendmsg(): no per-socket join of the bytes (Python 3.11's writelines joins them). What the
    kernel does not take (a partial write, or an error the transport then meets and handles)
    goes to the transport, in order behind what was sent."""
    for start in range(0, len(frames), IOV_MAX):
        chunk = frames[start : start + IOV_MAX]
        try:
            sent = sock.sendmsg(chunk)
        except OSError:
            sent = 0
        if sent == sum(map(len, chunk)):
            continue
        rest: list[bytes | memoryview] = []
        for i, frame in enumerate(frames[start:]):
            if sent >= len(frame):
                sent -= len(frame)
                continue
            rest.append(memoryview(frame)[sent:] if sent else frame)
            rest.extend(frames[start + i + 1 :])
            break
        transport.writelines(rest)
        return
