"""The bytes a kill goes out as: frame splicing, permessage-deflate (RFC 7692) negotiation, frame
headers, and each kill's variants (languages x plain or deflated), each made at most once.

aiohttp compresses per socket (a compressor of ~200 KB each and the deflate work once per
client); a message deflated on its own (a fresh raw-deflate stream, sync flush, the trailing
00 00 ff ff removed) is decodable by every client that negotiated the extension, whatever
context takeover it offered, as long as its window is no larger than the client allows. So the
hub deflates each kill variant once and writes the same bytes, with RSV1 set, to every deflate
socket; aiohttp's own writer never compresses (acks, errors, pongs and close frames go plain,
which RFC 7692 allows on the same socket), and aiohttp's reader still inflates what clients send.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

import ujson
from aiohttp import WebSocketError, WSCloseCode, WSMsgType, hdrs, web
from aiohttp._websocket import reader_py
from aiohttp.helpers import DEFAULT_CHUNK_SIZE
from aiohttp.web_request import BaseRequest

from ..kill.frames import encode, kill_frame
from ..kill.langs import Langs, filter_names
from ..numbers import bounded_int
from .wsmask import MaskCheck, MaskedWebSocketResponse

# Faster deflates of the same format, each optional: stdlib zlib does all of it without them.
# Both honour a window below 15 bits (no match reaches further back), and let go of the GIL.
_zlib: ModuleType
try:
    from zlib_ng import zlib_ng as _zlib
except ImportError:
    _zlib = zlib
_isal: ModuleType | None
try:
    from isal import isal_zlib as _isal
except ImportError:
    _isal = None

RSV1 = 0x40
_FIN_TEXT = 0x80 | WSMsgType.TEXT
_TRAILER = b"\x00\x00\xff\xff"
_CLOSE = 0x8
# Close codes a peer may send (RFC 6455 section 7.4 and IANA's registry: 1012-1014 were added
# later); 1004-1006 and 1015 are reserved and never sent on the wire, and nothing is defined
# from 5000 up: any other code in a client's close frame is a protocol error.
_VALID_CLOSE = frozenset((*range(1000, 1004), *range(1007, 1015), *range(3000, 5000)))
# Payloads from this size up are deflated in a thread (zlib releases the GIL): ~0.1 ms and more
# of the loop's time otherwise. The same bound as aiohttp's writer uses for its executor.
OFFLOAD_BYTES = 16 * 1024
# The windows we deflate with: a client's server_max_window_bits=N is answered with the largest
# of these not above N (RFC 7692 7.1.2.1 lets the answer be smaller), so clients cannot make
# the hub deflate each kill once per window size they pick (issue 22).
WINDOWS = (9, 12, 15)


def body_in(body: bytes, langs: Langs) -> bytes:
    """An encoded kill body with names only in `langs` (None: the body as it is)."""
    return body if langs is None else encode(filter_names(ujson.loads(body), langs))


class Deflated(bytes):
    """A text message deflated on its own: sent with RSV1 set. len() is its size on the wire
    (less the frame header), which is what a socket's byte budget should count."""

    __slots__ = ()


def deflate(message: bytes, level: int, wbits: int = 15) -> Deflated:
    """RFC 7692 §7.2.1: a fresh raw deflate stream, Z_SYNC_FLUSH, minus its 00 00 ff ff tail.
    Fresh for every message, so it does not matter whether the client keeps context."""
    compressor = _compressor(level, wbits)
    out = compressor.compress(message) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return Deflated(out[:-4] if out.endswith(_TRAILER) else out)


# Levels up to this (the burst's 1) go to isal at the same level (its levels are 0-3).
ISAL_LEVELS = 3


def _compressor(level: int, wbits: int) -> Any:
    """The compressor for zlib `level` (1-9) and a window of `wbits`, the fastest for the bytes
    (bench/compress.py: the real kill frames, against stdlib zlib in the same run):
    - levels 1-3 (a burst's 1): isal at the same level: the same bytes at ~0.25x the CPU;
    - a 9-bit window at any higher level: isal 3: ~0.08x the CPU of zlib's ~1 ms for a 29 KB
      frame there, and ~10% fewer bytes;
    - else (the live feed's 6) zlib-ng at the same level: ~0.6x the CPU of zlib's, +2% bytes
      with every language, -0.5% in one."""
    if _isal is not None and (level <= ISAL_LEVELS or wbits < 12):
        return _isal.compressobj(min(level, ISAL_LEVELS), _isal.DEFLATED, -wbits)
    return _zlib.compressobj(level, _zlib.DEFLATED, -wbits)


def frame_header(length: int, rsv: int = 0) -> bytes:
    """The header of an unmasked, final text frame (a server's) of `length` payload bytes."""
    first = _FIN_TEXT | rsv
    if length < 126:
        return _LEN1(first, length)
    if length < 65536:
        return _LEN2(first, 126, length)
    return _LEN3(first, 127, length)


_LEN1 = struct.Struct("!BB").pack
_LEN2 = struct.Struct("!BBH").pack
_LEN3 = struct.Struct("!BBQ").pack


def negotiate(offers: str | None) -> tuple[int, str | None]:
    """The client's Sec-WebSocket-Extensions -> (window bits we compress with, our answer), or
    (0, None) to decline. The first acceptable permessage-deflate offer wins (RFC 7692 §5).

    We always answer server_no_context_takeover (a server may, offered or not, §7.1.1.1): each
    message is a fresh stream. And client_no_context_takeover (§7.1.1.2): the client then
    compresses each message on its own too, so no inflate state is kept between its messages
    (aiohttp keeps a decompressor per socket, ~15 KiB, once a client sent one compressed frame:
    every browser does). A client's server_max_window_bits=N is honoured by compressing
    with the largest of WINDOWS up to N, and saying so (N=8 is declined: zlib's raw deflate
    cannot make 256-byte windows). Its client_max_window_bits needs no answer: we inflate with
    the largest window. An offer with an unknown or repeated parameter, or a bad value, is
    declined as the RFC asks."""
    for offer in (offers or "").split(","):
        name, *params = (part.strip() for part in offer.split(";"))
        if name.lower() != "permessage-deflate":
            continue
        bits = _accept(params)
        if bits:
            answer = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
            if bits < 15:
                answer += f"; server_max_window_bits={bits}"
            return bits, answer
    return 0, None


def _accept(params: list[str]) -> int:
    """Window bits for one offer's parameters, 0 if the offer cannot be accepted."""
    seen: set[str] = set()
    bits = 15
    for param in params:
        key, _, value = (p.strip().strip('"') for p in param.partition("="))
        key = key.lower()
        if key in seen:
            return 0
        seen.add(key)
        if key in ("server_no_context_takeover", "client_no_context_takeover"):
            if value:
                return 0
        elif key == "server_max_window_bits":
            # A "²" or 5,000 digits here made int() raise in the handshake: a 500.
            wanted = bounded_int(value, 9, 15)
            if wanted is None:
                return 0
            bits = max(w for w in WINDOWS if w <= wanted)
        elif key == "client_max_window_bits":
            if value and bounded_int(value, 8, 15) is None:
                return 0
        else:
            return 0
    return bits


class DeflateResponse(MaskedWebSocketResponse):
    """The socket (wsmask's, which checks that client frames are masked) with our negotiation
    (`negotiate`): aiohttp's reader inflates the client's compressed frames, its writer
    compresses nothing (the hub sends pre-deflated kill frames itself). `compress=True` offers
    the extension; once prepared, `compress` is the window bits agreed (0: none). No attribute
    of its own: one more per socket made the instance dict of 10,000 sockets grow. Built on
    aiohttp 3.14's `_handshake`/`_pre_start`/`_post_start` (pinned); tests/test_wire.py fails
    if they change."""

    def _handshake(self, request: BaseRequest) -> tuple[Any, str | None, int, bool]:
        offer, self._compress = self._compress, False  # aiohttp's own negotiation: off
        try:
            headers, protocol, _, _ = super()._handshake(request)
        finally:
            self._compress = offer
        bits = 0
        if offer:
            bits, answer = negotiate(request.headers.get(hdrs.SEC_WEBSOCKET_EXTENSIONS))
            if answer is not None:
                headers[hdrs.SEC_WEBSOCKET_EXTENSIONS] = answer
        return headers, protocol, bits, True

    def _pre_start(self, request: BaseRequest) -> tuple[str | None, Any]:
        protocol, writer = super()._pre_start(request)  # self._compress = bits: the reader inflates
        writer.compress = 0  # never a per-socket compressor: see the module docstring
        return protocol, writer

    def _post_start(self, request: BaseRequest, protocol: str | None, writer: Any) -> None:
        handler = request.protocol
        # Bytes that came with the upgrade request go to the parser that stays, not aiohttp's.
        tail, handler._message_tail = handler._message_tail, b""
        super()._post_start(request, protocol, writer)  # aiohttp's parser behind the mask check
        # Our reader on every socket, deflate or not: it checks close codes as the RFC does.
        # The pure-Python reader wants its own queue class (it writes attributes the compiled
        # queue keeps read-only); nothing has been queued yet.
        assert self._loop is not None  # prepare() sets it before it calls this
        self._reader = reader_py.WebSocketDataQueue(handler, DEFAULT_CHUNK_SIZE, loop=self._loop)
        parser = FreshInflateReader(
            self._reader, self._max_msg_size, compress=bool(self._compress), decode_text=self._decode_text
        )
        self._parser = parser
        handler._payload_parser = MaskCheck(parser, self._reader)
        if tail:
            eof, _ = handler._payload_parser.feed_data(tail)
            if eof:
                handler.close()


class StrictInflate:
    """Inflates one client message as RFC 7692 says (the 00 00 ff ff tail appended by aiohttp),
    strictly: data zlib cannot inflate, or bytes after a final deflate block, is invalid data
    (1007 with the reason), not an internal error that aiohttp would close with 1000/1006."""

    __slots__ = ()

    def decompress_sync(self, data: bytes | bytearray, max_length: int = 0) -> bytes:
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        try:
            out = inflater.decompress(data, max_length)
        except zlib.error as exc:
            raise WebSocketError(WSCloseCode.INVALID_TEXT, f"invalid deflate data: {exc}") from None
        # A message may end with a final block instead of a sync flush (RFC 7692 section
        # 7.2.3.4): then only the appended tail follows it. Anything more is not deflate data.
        if inflater.eof and inflater.unused_data not in (b"", _TRAILER):
            raise WebSocketError(WSCloseCode.INVALID_TEXT, "invalid deflate data: bytes after the final block")
        return out


_STRICT_INFLATE = StrictInflate()


class FreshInflateReader(reader_py.WebSocketReader):
    """aiohttp's (pure Python) frame reader, inflating every message on its own: with
    client_no_context_takeover agreed, each client message is a stream of its own, and the
    decompressor kept otherwise is ~15 KiB per socket. Client messages are few and small.
    Stricter than aiohttp's on what RFC 6455 and 7692 forbid: bad deflate data (1007) and close
    codes no peer may send (1002)."""

    def _handle_frame(self, fin: bool, opcode: int, payload: bytes | bytearray, compressed: int) -> None:
        if opcode == _CLOSE and len(payload) >= 2:
            code = int.from_bytes(payload[:2], "big")
            if code not in _VALID_CLOSE:
                raise WebSocketError(WSCloseCode.PROTOCOL_ERROR, f"invalid close code {code} (RFC 6455 section 7.4)")
        limit = self._max_msg_size
        if compressed and limit:
            # aiohttp refuses a frame of `limit` bytes or more, but an inflated message only
            # past `limit` (ws.py passes the limit + 1 for the first): one limit for both.
            self._max_msg_size = limit - 1
        self._decompressobj = _STRICT_INFLATE  # type: ignore[assignment]
        try:
            super()._handle_frame(fin, opcode, payload, compressed)
        finally:
            self._max_msg_size = limit
            self._decompressobj = None


async def send_deflated(ws: web.WebSocketResponse, payload: Deflated) -> None:
    """Send a pre-deflated text message on a socket (aiohttp has no public call for one), with
    the same back-pressure as its send_frame: wait while the transport is paused."""
    writer = ws._writer
    if writer is None or writer._closing:
        raise ConnectionResetError("socket is closing")
    writer._write_websocket_frame(payload, WSMsgType.TEXT, RSV1)
    if writer.protocol._paused:
        await writer.protocol._drain_helper()


class KillVariants:
    """One kill's frames for each kind of socket, each made at most once: a language variant
    (`lang`) is derived from the encoded body (decoded once, only if some socket wants one), and
    each frame deflated once per window size asked for."""

    __slots__ = ("_body", "_decode", "_decoded", "_deflated", "_frames", "level", "made", "seq")

    def __init__(
        self, seq: int, body: bytes | Callable[[], bytes], level: int, decoded: Callable[[], Any] | None = None
    ) -> None:
        """`decoded`: the kill as an object, where the caller has it (the worker, which just
        enriched it): spares the decode of the body (~0.3 ms) when a language variant is wanted."""
        self.seq = seq
        self.level = level
        self._body = body
        self._decode = decoded
        self._decoded: Any = None
        self._frames: dict[Langs, bytes] = {}
        self._deflated: dict[tuple[Langs, int], Deflated] = {}
        self.made = 0  # frames made: each language variant and each deflated one counts once

    def body(self) -> bytes:
        if not isinstance(self._body, bytes):
            self._body = self._body()
        return self._body

    def frame(self, langs: Langs) -> bytes:
        """The plain frame with names in `langs` (None: all of them)."""
        frame = self._frames.get(langs)
        if frame is None:
            if langs is None:
                frame = kill_frame(self.seq, self.body())
            else:
                if self._decoded is None and self._decode is not None:
                    self._decoded = self._decode()
                if self._decoded is None:
                    self._decoded = ujson.loads(self.body())
                frame = kill_frame(self.seq, encode(filter_names(self._decoded, langs)))
            self._frames[langs] = frame
            self.made += 1
        return frame

    def deflated(self, langs: Langs, bits: int) -> Deflated:
        """The frame deflated for a window of `bits` (made here if not made yet, e.g. in a thread)."""
        key = (langs, bits)
        out = self._deflated.get(key)
        if out is None:
            out = self._deflated[key] = deflate(self.frame(langs), self.level, bits)
            self.made += 1
        return out

    def has(self, langs: Langs, bits: int) -> bool:
        """Whether the frame for this kind of socket (deflated when `bits`) is made."""
        return (langs, bits) in self._deflated if bits else langs in self._frames
