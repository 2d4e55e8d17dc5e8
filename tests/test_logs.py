"""Logs of the real server: JSON lines on request, and no stack trace for expected conditions."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from serverproc import ServerProcess

from killboard.logs import MAX_CLIENT_LINE, BadRequestFilter, ClientLines, JsonFormatter, Throttled, client

TOKEN = "log-token"


async def test_json_lines_and_no_stack_traces(tmp_path: Path) -> None:
    server = ServerProcess(
        tmp_path / "kb.sqlite3",
        env={"KILLBOARD_INGEST_TOKEN": TOKEN, "KILLBOARD_LOG_FORMAT": "json", "KILLBOARD_LOG_LEVEL": "INFO"},
    )
    try:
        await server.start()
        async with aiohttp.ClientSession() as session:
            # Expected conditions, each worth one line: a wrong token, bad JSON, a bad kill,
            # an unknown WebSocket action, an oversized WebSocket frame, a missing kill.
            async with session.post(server.url + "/api/killmails", data=b"{}") as resp:
                assert resp.status == 401
            auth = {"Authorization": f"Bearer {TOKEN}"}
            async with session.post(server.url + "/api/killmails", data=b"{not json", headers=auth) as resp:
                assert resp.status == 400
            async with session.post(server.url + "/api/killmails", json={"victim": 1}, headers=auth) as resp:
                assert resp.status == 422
            async with session.get(server.url + "/api/killmails/123") as resp:
                assert resp.status == 404
            async with session.ws_connect(server.url + "/ws") as ws:
                await ws.send_str('{"action":"dance"}')
                assert (await ws.receive_json(timeout=5))["action"] == "error"
                await ws.send_str("x" * 10_000)
                await ws.receive(timeout=5)
        assert server.terminate() == 0
    finally:
        server.stop()
    lines = server.log.read_text().splitlines()
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= e.keys() for e in entries)
    messages = [e["message"] for e in entries]
    assert any("serving on http://127.0.0.1" in m for m in messages)
    assert any("missing or wrong token" in m for m in messages)
    assert any("unknown action 'dance'" in m for m in messages)
    assert not [e for e in entries if "exc" in e], "a stack trace was logged for an expected condition"
    assert not [e for e in entries if e["level"] in ("ERROR", "CRITICAL")]


def test_formatter_keeps_a_trace_for_the_unexpected() -> None:
    import logging
    import sys

    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.LogRecord("killboard.x", logging.ERROR, __file__, 1, "failed: %s", ("it",), sys.exc_info())
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "failed: it" and entry["level"] == "ERROR"
    assert "RuntimeError: boom" in entry["exc"]


# Requests aiohttp cannot parse, as a scanner or an attacker sends them: each is answered 400.
MALFORMED: list[bytes] = [
    b"GARBAGE\r\n\r\n",
    b"GET\r\n\r\n",
    b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
    b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",  # a request line over 8,190 bytes
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n",  # a header line too long
    b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(200)) + b"\r\n",
    b"GET /\x00\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET http://[::1 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
]


async def send_raw(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(200), 5)
    finally:
        writer.close()


async def test_malformed_requests_log_one_bounded_quiet_line_each(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "kb.sqlite3", env={"KILLBOARD_LOG_LEVEL": "INFO"})
    try:
        await server.start()
        before = len(server.log.read_text().splitlines())
        answers = [await send_raw(server.port, MALFORMED[i % len(MALFORMED)]) for i in range(50)]
        async with aiohttp.ClientSession() as session, session.get(server.url + "/health") as resp:
            assert resp.status == 200  # the server is fine
        assert server.terminate() == 0
    finally:
        server.stop()
    assert all(a[:9] in (b"HTTP/1.0 ", b"HTTP/1.1 ") and a[9:10] == b"4" for a in answers), {a[:40] for a in answers}
    lines = server.log.read_text().splitlines()[before:]
    bad = [line for line in lines if "bad HTTP request" in line or "Error handling request" in line]
    print(f"{len(lines)} lines for 50 malformed requests, {len(bad)} about them:", *bad, sep="\n")
    assert not [line for line in lines if "Traceback" in line or " ERROR " in line], "\n".join(lines[:20])
    # One client: a few lines, then one saying the rest were not logged.
    assert 1 <= len(bad) <= 10, "\n".join(bad)
    assert len(lines) <= 20, "\n".join(lines)


def test_bad_request_lines_are_rate_limited_per_client_and_real_errors_keep_their_trace() -> None:
    import logging

    from aiohttp.http_exceptions import BadStatusLine

    now = [0.0]
    quiet = BadRequestFilter(rate=0.1, burst=3, peers=2, clock=lambda: now[0])

    def record(peer: str, exc: BaseException) -> logging.LogRecord:
        return logging.LogRecord(
            "aiohttp.server",
            logging.ERROR,
            __file__,
            1,
            "Error handling request from %s",
            (peer,),
            (type(exc), exc, None),
        )

    passed = [r for r in (record("1.2.3.4", BadStatusLine("x\ny" * 500)) for _ in range(20)) if quiet.filter(r)]
    assert len(passed) == 3
    first = passed[0]
    assert first.levelno == logging.INFO and first.exc_info is None
    assert "\n" not in first.getMessage() and len(first.getMessage()) < 300
    # Another client is not silenced by the first one.
    assert quiet.filter(record("5.6.7.8", BadStatusLine("z")))
    # Later, the first client's next line says how many were left out.
    now[0] += 60
    later = record("1.2.3.4", BadStatusLine("x"))
    assert quiet.filter(later)
    assert "suppressed 17 lines from 1.2.3.4" in later.getMessage()
    # The table of clients is bounded.
    for i in range(100):
        quiet.filter(record(f"10.0.0.{i}", BadStatusLine("x")))
    assert len(quiet) <= 2
    # A real error keeps its level and its traceback, however many there are.
    try:
        raise RuntimeError("a bug")
    except RuntimeError as exc:
        real = [record("1.2.3.4", exc) for _ in range(20)]
    assert all(quiet.filter(r) for r in real)
    assert real[-1].levelno == logging.ERROR and real[-1].exc_info is not None


async def lines_of(tmp_path: Path, act: Callable[[aiohttp.ClientSession, str], Awaitable[None]]) -> list[str]:
    """The log lines a real server writes while `act(session, url)` runs (it then answers
    /health, and stops cleanly)."""
    server = ServerProcess(tmp_path / "kb.sqlite3", env={"KILLBOARD_LOG_LEVEL": "INFO"})
    try:
        await server.start()
        before = len(server.log.read_text().splitlines())
        async with aiohttp.ClientSession() as session:
            await act(session, server.url)
            await asyncio.sleep(0.2)
            async with session.get(server.url + "/health") as resp:
                assert resp.status == 200
        assert server.terminate() == 0
    finally:
        server.stop()
    lines = server.log.read_text().splitlines()[before:]
    print(f"{len(lines)} lines:", *lines, sep="\n")
    return lines


async def test_a_flood_of_bad_queries_logs_a_few_short_lines(tmp_path: Path) -> None:
    """Each of 200 requests with a 5,000-character bad id is a 400, and was a 5,000-character
    line: now a few lines of at most MAX_CLIENT_LINE characters, then one saying how many were
    left out."""

    async def flood(session: aiohttp.ClientSession, url: str) -> None:
        for i in range(200):
            path = ("/api/character/", "/api/battles/", "/api/killmails/")[i % 3] + "x" * 5000
            async with session.get(url + path) as resp:
                assert resp.status == 400

    lines = await lines_of(tmp_path, flood)
    about = [line for line in lines if "xxxx" in line]
    assert 1 <= len(about) <= 10
    assert all("must be" in line or "expected" in line or "suppressed" in line for line in about)  # the reason stays
    assert all(len(line) < MAX_CLIENT_LINE + 150 for line in lines)  # + the time, level and logger


async def test_handshakes_offering_unknown_sub_protocols_log_a_few_short_lines(tmp_path: Path) -> None:
    """aiohttp warned of each, quoting the offer whole: 100 handshakes offering 5,000 characters
    of sub-protocols were 100 lines of 5,000 characters. Each socket still works."""

    async def offer(session: aiohttp.ClientSession, url: str) -> None:
        for i in range(100):
            protocols = {"Sec-WebSocket-Protocol": f"p{i}-" + "z" * 5000}
            async with session.ws_connect(url + "/ws", headers=protocols) as ws:
                await ws.send_json({"action": "ping"})
                assert (await ws.receive_json(timeout=5))["action"] == "pong"

    about = [line for line in await lines_of(tmp_path, offer) if "Client protocols" in line]
    assert 1 <= len(about) <= 10
    assert all(len(line) < MAX_CLIENT_LINE + 150 and " INFO " in line for line in about)


def test_client_lines_are_limited_per_address_and_cut_short() -> None:
    import logging

    now = [0.0]
    lines = ClientLines(rate=0.1, burst=3, peers=2, clock=lambda: now[0])

    def record(message: str, remote: str | None) -> logging.LogRecord:
        made = logging.LogRecord("killboard.web.api", logging.INFO, __file__, 1, "GET %s -> 400", (message,), None)
        if remote is not None:
            made.__dict__.update(client(remote))
        return made

    passed = [r for r in (record("/x" + "y\n" * 4000, "1.2.3.4") for _ in range(20)) if lines.filter(r)]
    assert len(passed) == 3
    text = passed[0].getMessage()
    assert "\n" not in text and len(text) == MAX_CLIENT_LINE and text.endswith("…")
    assert lines.filter(record("/other", "5.6.7.8"))  # another client is not silenced
    now[0] += 60
    later = record("/again", "1.2.3.4")
    assert lines.filter(later)
    assert later.getMessage() == "GET /again -> 400; suppressed 17 lines from 1.2.3.4 before this one"
    # A line no client set off passes untouched, however many.
    assert all(lines.filter(record("server", None)) for _ in range(100))
    for i in range(100):
        lines.filter(record("x", f"10.0.0.{i}"))
    assert len(lines) <= 2


async def test_throttled_lines_a_few_then_one_exact_summary(caplog: pytest.LogCaptureFixture) -> None:
    """Throttled (the hub's closings): `burst` lines, then counted by reason (at most `reasons`
    told apart, then "other"), summed up `interval` after the first left out, at the highest
    level among them; the bucket refills at `rate`; flush() says what is left at once."""
    import logging

    now = [0.0]
    logger = logging.getLogger("test.throttled")
    throttled = Throttled(
        logger, "closed", "clients", burst=2, rate=0.5, interval=0.05, reasons=2, clock=lambda: now[0]
    )
    caplog.set_level(logging.INFO, logger="test.throttled")
    for i in range(10):
        throttled.log(logging.WARNING if i == 9 else logging.INFO, f"r{i % 3}", "client %d closed", i)
    assert [r.getMessage() for r in caplog.records] == ["client 0 closed", "client 1 closed"]
    await asyncio.sleep(0.1)
    summary = caplog.records[-1]
    assert summary.getMessage() == "closed 8 more clients (r2: 3, r0: 3, other: 2) in the last 0.05 s"
    assert summary.levelno == logging.WARNING
    caplog.clear()
    now[0] = 2.0  # one token back
    throttled.log(logging.INFO, "r0", "client %d closed", 10)
    throttled.log(logging.INFO, "r0", "client %d closed", 11)
    throttled.flush()
    assert [r.getMessage() for r in caplog.records] == [
        "client 10 closed",
        "closed 1 more clients (r0: 1) in the last 0.05 s",
    ]
    await asyncio.sleep(0.1)
    assert len(caplog.records) == 2  # the timer was cancelled: nothing twice
