"""RFC 6455's rule that every client frame is masked (section 5.1: else close 1002), and RFC
7692's that control frames are never compressed (section 6.1: RSV1 on one is a protocol error),
which aiohttp's frame reader (3.14) does not check: a WebSocketResponse whose parser is fronted
by a scanner of frame headers, and whose close frame says why when a client's frame was bad."""

from __future__ import annotations

from typing import Any

from aiohttp import WebSocketError, WSCloseCode, web
from aiohttp.web_request import BaseRequest

UNMASKED = "client frames must be masked (RFC 6455 section 5.1)"
COMPRESSED_CONTROL = "control frames are never compressed: RSV1 set on one (RFC 7692 section 6.1)"
# A close frame's reason: at most 123 bytes (a control frame's 125 less the code).
MAX_REASON = 123


class MaskCheck:
    """Reads the header of every client frame on its way to aiohttp's parser and skips its
    payload; the first unmasked frame, or control frame with RSV1 set, ends the stream with 1002
    instead of being parsed.

    Client messages are small and few (ws_max_message), so this costs next to nothing."""

    __slots__ = ("_head", "_parser", "_queue", "_reason", "_skip", "failed")

    def __init__(self, parser: Any, queue: Any) -> None:
        self._parser = parser
        self._queue = queue
        self._head = b""  # the start of a frame header split across reads
        self._skip = 0  # payload bytes of the current frame still to pass through
        self._reason = UNMASKED
        self.failed = False

    def feed_data(self, data: bytes | bytearray | memoryview) -> tuple[bool, bytes]:
        if self.failed:
            return True, b""
        data = bytes(data)
        bad = self._scan(data)
        if bad is None:
            return self._parser.feed_data(data)
        self.failed = True
        if bad:
            self._parser.feed_data(data[:bad])  # the frames before it are fine
        self._queue.set_exception(WebSocketError(WSCloseCode.PROTOCOL_ERROR, self._reason))
        return True, b""

    def feed_eof(self) -> None:
        self._parser.feed_eof()

    def _scan(self, data: bytes) -> int | None:
        """Offset of the first unmasked frame, or compressed control frame, in `data` (counted
        from its header's first byte, which may lie in an earlier read: then 0), or None."""
        pos, end = 0, len(data)
        while True:
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
            if pos >= end:
                return None
            start = pos - len(self._head)
            head = self._head + data[pos : pos + 14]
            if len(head) < 2:
                self._head = head
                return None
            if not head[1] & 0x80:
                self._reason = UNMASKED
                return max(start, 0)
            if head[0] & 0x48 == 0x48:  # RSV1 and an opcode of 8 or more: a control frame
                self._reason = COMPRESSED_CONTROL
                return max(start, 0)
            n = head[1] & 0x7F
            size = 2 + {126: 2, 127: 8}.get(n, 0) + 4
            if len(head) < size:
                self._head, pos = head, end
                return None
            if n == 126:
                n = int.from_bytes(head[2:4], "big")
            elif n == 127:
                n = int.from_bytes(head[2:10], "big")
            pos += size - len(self._head)
            self._head = b""
            self._skip = n


class MaskedWebSocketResponse(web.WebSocketResponse):
    """aiohttp's WebSocketResponse with MaskCheck in front of its parser, whose close frame
    gives the reason when a client frame broke the protocol (aiohttp sends the code alone)."""

    async def close(self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True) -> bool:
        if not message and code != WSCloseCode.OK:
            reader = self._reader
            exc = reader.exception() if reader is not None else None
            if isinstance(exc, WebSocketError) and exc.code == code:
                # Cut on a character boundary: a close reason must be UTF-8 too.
                message = str(exc).encode()[:MAX_REASON].decode(errors="ignore").encode()
        return await super().close(code=code, message=message, drain=drain)

    def _post_start(self, request: BaseRequest, protocol: str | None, writer: Any) -> None:
        handler = request.protocol
        # Bytes that came with the upgrade request are fed to the parser as it is installed:
        # hold them back so they pass through the check too.
        tail, handler._message_tail = handler._message_tail, b""
        super()._post_start(request, protocol, writer)
        check = MaskCheck(handler._payload_parser, self._reader)
        handler._payload_parser = check
        if tail:
            eof, _ = check.feed_data(tail)
            if eof:
                handler.close()
