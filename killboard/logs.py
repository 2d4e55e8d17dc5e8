"""Log setup: plain lines for people, or JSON lines (KILLBOARD_LOG_FORMAT=json) for log shippers;
requests that cannot be parsed get a short line, rate-limited per client, not a stack trace; so do
the lines a client's own bad input sets off (ClientLines); lines a crowd sets off at once (sockets
closed together) are summed up (Throttled)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import ujson
from aiohttp.http_exceptions import HttpProcessingError

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message; `exc` only when a
    stack trace was asked for (an unexpected failure)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return ujson.dumps(entry, ensure_ascii=False, escape_forward_slashes=False)


# aiohttp's server logs every request it could not parse with this message and the parse error's
# stack trace, at ERROR (aiohttp 3.14 web_protocol.py handle_error), though it answered 400.
BAD_REQUEST_MESSAGE = "Error handling request from %s"
BAD_REQUEST_LOGGER = "aiohttp.server"
MAX_REASON = 160


@dataclass(slots=True)
class LineBucket:
    """A token bucket for log lines: `burst` at once, then `rate` a second; what it refused is
    counted in `suppressed` (the caller reports and resets it)."""

    tokens: float
    stamp: float
    suppressed: int = 0

    def take(self, now: float, rate: float, burst: int) -> bool:
        self.tokens = min(float(burst), self.tokens + (now - self.stamp) * rate)
        self.stamp = now
        if self.tokens < 1:
            self.suppressed += 1
            return False
        self.tokens -= 1
        return True


class _Peers:
    """A token bucket per client address for the lines it sets off: `burst` at once, then one per
    1/`rate` seconds. At most `peers` addresses are tracked (the oldest forgotten first; what
    they had suppressed is told with the next line of anyone), so neither one client nor many
    can fill the disk."""

    def __init__(self, rate: float, burst: int, peers: int, clock: Callable[[], float]) -> None:
        self.rate, self.burst, self.peers, self._clock = rate, burst, peers, clock
        self._table: OrderedDict[str, LineBucket] = OrderedDict()
        self._forgotten = 0  # lines suppressed from addresses no longer tracked

    def __len__(self) -> int:
        return len(self._table)

    def let(self, peer: str) -> str | None:
        """None: leave this line out. Else what to add to it: how many were left out before."""
        now = self._clock()
        state = self._table.get(peer)
        if state is None:
            state = self._table[peer] = LineBucket(float(self.burst), now)
            while len(self._table) > self.peers:
                _, old = self._table.popitem(last=False)
                self._forgotten += old.suppressed
        else:
            self._table.move_to_end(peer)
        if not state.take(now, self.rate, self.burst):
            return None
        note = ""
        if state.suppressed:
            note += f"; suppressed {state.suppressed} lines from {peer} before this one"
            state.suppressed = 0
        if self._forgotten:
            note += f"; suppressed {self._forgotten} lines from other clients"
            self._forgotten = 0
        return note


class _PerPeerFilter(logging.Filter):
    """A log filter with a _Peers table: `burst` lines per address, then `rate` a second."""

    def __init__(
        self, rate: float = 0.1, burst: int = 5, peers: int = 1024, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._peers = _Peers(rate, burst, peers, clock)

    def __len__(self) -> int:
        return len(self._peers)


class BadRequestFilter(_PerPeerFilter):
    """Turns aiohttp's line for a request it could not parse (bad request line, headers or URL:
    the client's fault, already answered 400) into one INFO line without a stack trace, and
    rate-limits those lines per client address with a token bucket (`burst` lines, then one per
    1/`rate` seconds). The next line let through says how many were left out. At most `peers`
    addresses are tracked (the oldest forgotten first; what they had suppressed is reported with
    the next line of anyone), so neither one client nor many can fill the disk. Every other
    record, a real error with its stack trace included, passes untouched."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if record.msg != BAD_REQUEST_MESSAGE or not isinstance(exc, HttpProcessingError):
            return True
        peer = str(record.args[0] if isinstance(record.args, tuple) and record.args else "unknown")[:64]
        note = self._peers.let(peer)
        if note is None:
            return False
        message = f"bad HTTP request from {peer} (answered {exc.code}): {_one_line(exc.message)}{note}"
        record.msg, record.args = "%s", (message,)
        record.levelno, record.levelname = logging.INFO, "INFO"
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


CLIENT = "client"  # a record's attribute (logging's `extra`): the address whose input set it off
MAX_CLIENT_LINE = 300


def client(remote: str | None) -> dict[str, str]:
    """`extra` for a line a client's own input sets off (a 400, a wrong token, a body never
    sent): ClientLines limits those per address."""
    return {CLIENT: remote or "unknown"}


class ClientLines(_PerPeerFilter):
    """On the log handler: the lines marked with `client(address)` get BadRequestFilter's bucket
    per address (`burst` lines, then one per 1/`rate` seconds; the next one let through says how
    many were left out), each cut to one line of at most MAX_CLIENT_LINE characters (they quote
    the client's path and values). A 400 answered to every request of a flood, with 5,000
    characters of path each, was a line each. Every other record passes untouched."""

    def filter(self, record: logging.LogRecord) -> bool:
        peer = getattr(record, CLIENT, None)
        if peer is None:
            return True
        note = self._peers.let(str(peer)[:64])
        if note is None:
            return False
        message = " ".join(record.getMessage().split())
        if len(message) > MAX_CLIENT_LINE:
            message = message[: MAX_CLIENT_LINE - 1] + "…"
        record.msg, record.args = "%s", (message + note,)
        return True


# aiohttp warns of every handshake offering sub-protocols we do not speak, quoting the offer whole
# (aiohttp 3.14 web_ws.py `_handshake`): a client's doing, as a 400 is.
WS_PROTOCOLS_LOGGER = "aiohttp.websocket"
WS_PROTOCOLS_MESSAGE = "%s: Client protocols %r don’t overlap server-known ones %r"


class ClientsProtocols(logging.Filter):
    """On aiohttp's websocket logger: its line about a client's sub-protocols becomes a client
    line (ClientLines limits and cuts it), at INFO. Its other lines pass untouched."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == WS_PROTOCOLS_MESSAGE and isinstance(record.args, tuple) and record.args:
            record.__dict__.update(client(str(record.args[0])))
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


class Throttled:
    """One kind of line that a crowd sets off at once (1,000 slow clients dropped in one step, a
    flood refused at the socket limit): BadRequestFilter's bucket for the kind as a whole, so the
    first `burst` lines are logged as they come and then `rate` a second; the others are counted
    by reason and summed up in one line `interval` seconds after the first one left out
    ("closed 995 more websocket clients (1013 send buffer full: 990, 1008 too many messages: 5)
    in the last 1 s"), at the highest level among them. At most `reasons` reasons are told
    apart (the rest count as "other"), so neither the lines nor this object grow with the crowd.
    Uses the running loop's timer: log from the loop."""

    def __init__(
        self,
        logger: logging.Logger,
        verb: str,
        noun: str,
        burst: int = 5,
        rate: float = 0.1,
        interval: float = 1.0,
        reasons: int = 32,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.verb, self.noun = verb, noun  # "closed", "websocket clients"
        self.burst = burst
        self.rate = rate
        self.interval = interval
        self.reasons = reasons
        self._clock = clock
        self._bucket = LineBucket(float(burst), clock())
        self._counts: dict[str, int] = {}
        self._level = logging.NOTSET
        self._timer: asyncio.TimerHandle | None = None

    def log(self, level: int, reason: str, msg: str, *args: object) -> None:
        """`msg % args` now, or counted under `reason` for the next summary."""
        if not self.logger.isEnabledFor(level):
            return
        if self._bucket.take(self._clock(), self.rate, self.burst):
            self.logger.log(level, msg, *args)
            return
        counts = self._counts
        if reason not in counts and len(counts) >= self.reasons:
            reason = "other"
        counts[reason] = counts.get(reason, 0) + 1
        self._level = max(self._level, level)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.interval, self.flush)

    def flush(self) -> None:
        """The summary of what was left out, now (the timer's, or at shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        counts, self._counts = self._counts, {}
        if not counts:
            return
        detail = ", ".join(f"{reason}: {n}" for reason, n in sorted(counts.items(), key=lambda kv: -kv[1]))
        total = sum(counts.values())
        summary = "%s %d more %s (%s) in the last %g s"
        self.logger.log(self._level, summary, self.verb, total, self.noun, detail, self.interval)
        self._bucket.suppressed = 0
        self._level = logging.NOTSET


def _one_line(text: object) -> str:
    """The parse error's message on one short line of printable ASCII: it quotes client bytes."""
    flat = " ".join(str(text).split())
    return flat.encode("ascii", "backslashreplace").decode()[:MAX_REASON]


def setup(env: Mapping[str, str]) -> None:
    """Root logger from KILLBOARD_LOG_LEVEL (default INFO) and KILLBOARD_LOG_FORMAT (plain|json)."""
    level = env.get("KILLBOARD_LOG_LEVEL", "INFO").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise SystemExit(f"KILLBOARD_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {level!r}")
    fmt = env.get("KILLBOARD_LOG_FORMAT", "plain").lower()
    if fmt not in ("plain", "json"):
        raise SystemExit(f"KILLBOARD_LOG_FORMAT must be plain or json, got {fmt!r}")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(PLAIN_FORMAT))
    handler.addFilter(ClientLines())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    for name, kind in ((BAD_REQUEST_LOGGER, BadRequestFilter), (WS_PROTOCOLS_LOGGER, ClientsProtocols)):
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, kind)]:  # setup may run again (tests)
            logger.removeFilter(old)
        logger.addFilter(kind())
