"""The hub's own cost per delivery, without HTTP, ingest or clients in the way: CPU of the event
loop's thread (user and system apart, getrusage RUSAGE_THREAD) from `Hub.publish` of a real kill
until every socket's frame is written, for N permessage-deflate sockets on loopback TCP.

    python -m bench.hubsend [--sockets 1000] [--kills 200] [--rounds 2] [--baseline DIR]

Each tree (this one, and `--baseline DIR`, e.g. /work/main) runs in a process of its own, the
rounds alternating between them, so both see the same machine. The sockets are drained between
kills, outside the measured window; the deflate of each kill runs in a thread (as in the server)
and is not counted. The system part is the kernel's send() on loopback, which also does the
receiving side's TCP work.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()


class _WS:
    """What the hub reads of a socket's WebSocketResponse on the fast path."""

    closed = False


def _load(killmails: Path) -> list[tuple[bytes, Any]]:
    """The real kills enriched and encoded, with their match keys, by the measured tree."""
    from killboard.kill.enrich import enrich
    from killboard.kill.frames import encode
    from killboard.kill.prices import price_book
    from killboard.kill.staticdata import load_static
    from killboard.kill.topics import kill_facts
    from killboard.kill.validate import parse_submission

    static = load_static(Path("data"))
    prices = price_book(static)
    files = sorted(killmails.glob("[0-9]*.json"), key=lambda p: int(p.stem))
    real = [enrich(parse_submission(json.loads(p.read_text())), static, {}, prices) for p in files]
    return [(encode(kill), kill_facts(kill)) for kill in real]


async def _child(sockets: int, kills: int, bodies: list[tuple[bytes, Any]]) -> dict[str, Any]:
    """Runs in the measured tree (on its sys.path): only killboard and the standard library."""
    from killboard.kill.topics import parse
    from killboard.live.hub import Hub

    loop = asyncio.get_running_loop()
    accepted: list[asyncio.Transport] = []

    class Server(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            accepted.append(transport)

    server = await loop.create_server(Server, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    clients = []
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * sockets + 256)), hard))
    for _ in range(sockets):
        client = socket.socket()
        client.setblocking(False)
        await loop.sock_connect(client, ("127.0.0.1", port))  # the loop accepts meanwhile
        clients.append(client)
    while len(accepted) < sockets:
        await asyncio.sleep(0.01)
    hub = Hub(send_queue=512, close_timeout=1.0)
    channel = parse("kills")
    for transport in accepted:
        hub.subscribe(hub.attach(_WS(), transport, deflate=15), channel)  # type: ignore[arg-type]

    def drain() -> int:
        got = 0
        for client in clients:
            while True:
                try:
                    data = client.recv(1 << 20)
                except BlockingIOError:
                    break
                if not data:
                    break
                got += len(data)
        return got

    user = system = 0.0
    received = 0
    for seq in range(1, kills + 2):
        body, facts = bodies[seq % len(bodies)]
        before = resource.getrusage(resource.RUSAGE_THREAD)
        hub.publish(seq, body, facts)
        while hub._late or hub._due:
            deflater = hub._deflater
            if deflater is not None and not deflater.done():
                await deflater  # the deflate thread (no spinning on the loop meanwhile)
            else:
                await asyncio.sleep(0)  # the flush
        after = resource.getrusage(resource.RUSAGE_THREAD)
        if seq > 1:  # the first kill warms up (buffers, caches)
            user += after.ru_utime - before.ru_utime
            system += after.ru_stime - before.ru_stime
        await asyncio.sleep(0.002)  # the kernel hands the bytes over
        got = drain()
        if seq > 1:
            received += got
    deliveries = sockets * kills
    for client in clients:
        client.close()
    server.close()
    return {
        "deliveries": deliveries,
        "bytes": received,
        "user_us": user / deliveries * 1e6,
        "system_us": system / deliveries * 1e6,
        "written_direct": hub.direct_writes,
    }


def run_tree(root: Path, sockets: int, kills: int) -> dict[str, Any]:
    """One measurement in a process running `root`'s killboard."""
    killmails = HERE.parent.parent / "tests" / "data" / "killmails"
    out = subprocess.run(
        [sys.executable, str(HERE), "--child", str(sockets), str(kills), str(killmails)],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
    )
    if out.returncode:
        raise RuntimeError(f"{root}: the measurement failed:\n{out.stderr}")
    return dict(json.loads(out.stdout.splitlines()[-1]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2, help="runs of each tree, alternating")
    parser.add_argument("--baseline", type=Path, help="another checkout (e.g. /work/main) measured the same way")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    trees = [("this tree", HERE.parent.parent)]
    if args.baseline is not None:
        trees.append((f"baseline {args.baseline}", args.baseline))
    rows = []
    print(f"load average before: {os.getloadavg()}", file=sys.stderr)
    for round_ in range(args.rounds):
        for name, root in trees:
            started = time.monotonic()
            row = {"name": name, "round": round_ + 1, **run_tree(root, args.sockets, args.kills)}
            row["seconds"] = time.monotonic() - started
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    print(f"{args.sockets:,} deflate sockets on loopback, {args.kills} real kills, load {os.getloadavg()}\n")
    print("| tree | round | user µs a delivery | system µs a delivery | total |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        total = r["user_us"] + r["system_us"]
        print(f"| {r['name']} | {r['round']} | {r['user_us']:.2f} | {r['system_us']:.2f} | {total:.2f} |")
    if args.json is not None:
        args.json.write_text(json.dumps({"rows": rows, "load": os.getloadavg()}, indent=1))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        sys.path.insert(0, os.getcwd())
        loaded = _load(Path(sys.argv[4]))
        print(json.dumps(asyncio.run(_child(int(sys.argv[2]), int(sys.argv[3]), loaded))))
    else:
        main()
