"""bench/server.py's Process, shared by the benchmarks' servers (this tree's and Node's): a free
port, the url and pid, a start that waits for /health or says why the process died, and a stop."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.server import Process

HEALTHY = """
import http.server, sys
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Health).serve_forever()
"""


class Script(Process):
    name = "a test script"
    hint = " (a hint)"

    def __init__(self, code: str) -> None:
        super().__init__()
        self.code = code

    def spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-c", self.code, str(self.port)])


async def test_start_waits_for_health_and_stop_ends_the_process() -> None:
    process = Script(HEALTHY)
    try:
        assert await process.start(timeout=15) > 0
        assert process.url == f"http://127.0.0.1:{process.port}"
        assert process.proc is not None and process.pid == process.proc.pid
    finally:
        process.stop()
    assert process.proc is not None and process.proc.returncode is not None


async def test_a_process_that_dies_at_start_is_named_with_its_exit_code_and_hint() -> None:
    process = Script("import sys; sys.exit(3)")
    with pytest.raises(RuntimeError, match=r"^a test script exited with 3 \(a hint\)$"):
        await process.start(timeout=15)
