"""Logs of the real server: JSON lines on request, and no stack trace for expected conditions."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
from serverproc import ServerProcess

from killboard.logs import JsonFormatter

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
