"""The hub's own cost per delivery, without HTTP, ingest or clients in the way: CPU of the event
loop's thread (user and system apart, getrusage RUSAGE_THREAD) from `Hub.publish` of a real kill
until every socket's frame is written, for N permessage-deflate sockets on loopback TCP; and the
longest the loop is held meanwhile (the stall).

    python -m bench.hubsend [--sockets 1000] [--kills 200] [--rounds 2] [--baseline DIR]
                            [--stall-kills 20] [--burst 10] [--together 1]

Each tree (this one, and `--baseline DIR`, e.g. /work/main) runs in a process of its own, the
rounds alternating between them, so both see the same machine. The client ends of the sockets
are in a helper process (10,000 sockets are 20,000 descriptors in one process, past this
machine's hard limit), which drains them between kills, outside the measured window; the
deflate of each kill runs in a thread (as in the server) and is not counted. The system part
is the kernel's send() on loopback, which also does the receiving side's TCP work.

The stall is measured after the CPU rounds, in runs of their own (the probe costs CPU): a probe
task that only yields (`await asyncio.sleep(0)`) records the longest time between two of its
turns while one kill is published to every socket and written (`--stall-kills` times), and while
`--burst` kills are published in one step (as the pipeline hands over a stored batch).
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
    _closed = False  # what the hub's flush reads on asyncio (the property's attribute)
    _writer = None  # a socket that falls behind (its writer task): ends quietly, not measured


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


async def _child(
    sockets: int, kills: int, bodies: list[tuple[bytes, Any]], stall_kills: int, burst: int, together: int = 1
) -> dict[str, Any]:
    """Runs in the measured tree (on its sys.path): only killboard and the standard library."""
    from killboard.kill.topics import parse
    from killboard.live.hub import Hub

    loop = asyncio.get_running_loop()
    accepted: list[asyncio.Transport] = []

    class Server(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            accepted.append(transport)

    _more_files(sockets)
    server = await loop.create_server(Server, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    clients = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HERE),
        "--clients",
        str(port),
        str(sockets),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert clients.stdin is not None and clients.stdout is not None
    stdin, stdout = clients.stdin, clients.stdout  # not None, also in drain() below
    ready = await stdout.readline()  # the loop accepts meanwhile
    if ready.strip() != b"ready":
        raise RuntimeError(f"the client process did not connect its sockets: {ready!r}")
    while len(accepted) < sockets:
        await asyncio.sleep(0.01)
    hub = Hub(send_queue=512, close_timeout=1.0)
    channel = parse("kills")
    for transport in accepted:
        hub.subscribe(hub.attach(_WS(), transport, deflate=15), channel)  # type: ignore[arg-type]

    async def drain() -> int:
        stdin.write(b"d\n")
        return int(await stdout.readline())

    async def delivered() -> None:
        """Until the hub has written every frame of what was published."""
        late = getattr(hub, "late", None)  # the delivery task (killboard/live/delivery.py)

        def waiting() -> tuple[Any, asyncio.Task[None] | None]:
            if late is None:  # a baseline from before delivery.py: the queue was the hub's own
                return hub._late, hub._deflater  # type: ignore[attr-defined]
            return late.entries, late.task

        while waiting()[0] or hub._due:
            deflater = waiting()[1]
            if deflater is not None and not deflater.done():
                await deflater  # the deflate thread (no spinning on the loop meanwhile)
            else:
                await asyncio.sleep(0)  # the flush

    user = system = 0.0
    received = seq = 0
    for step in range(0, kills + together, together):
        before = resource.getrusage(resource.RUSAGE_THREAD)
        for _ in range(together):  # one kill, or a stored batch's kills handed over in one step
            seq += 1
            body, facts = bodies[seq % len(bodies)]
            hub.publish(seq, body, facts)
        await delivered()
        after = resource.getrusage(resource.RUSAGE_THREAD)
        if step:  # the first warms up (buffers, caches)
            user += after.ru_utime - before.ru_utime
            system += after.ru_stime - before.ru_stime
        await asyncio.sleep(0.002)  # the kernel hands the bytes over
        got = await drain()
        if step:
            received += got
    deliveries = sockets * (seq - together)

    async def stalled(count: int) -> tuple[float, float, float]:
        """The longest loop turn while `count` kills published in one step are delivered, in ms:
        wall time, and the loop thread's CPU time in it (on a loaded machine a turn's wall time
        also counts the time the thread waited for a core); and the CPU of the publishing step."""
        nonlocal seq
        worst = worst_cpu = 0.0
        done = False

        async def probe() -> None:
            nonlocal worst, worst_cpu
            last, last_cpu = time.perf_counter(), time.thread_time()
            while not done:
                await asyncio.sleep(0)
                now, cpu = time.perf_counter(), time.thread_time()
                worst, worst_cpu = max(worst, now - last), max(worst_cpu, cpu - last_cpu)
                last, last_cpu = now, cpu

        probing = asyncio.create_task(probe())
        await asyncio.sleep(0)
        started = time.thread_time()
        for _ in range(count):
            seq += 1
            body, facts = bodies[seq % len(bodies)]
            hub.publish(seq, body, facts)
        publishing = time.thread_time() - started
        await delivered()
        done = True
        await probing
        await asyncio.sleep(0.002)
        await drain()
        return worst * 1000, worst_cpu * 1000, publishing * 1000

    stalls = [await stalled(1) for _ in range(stall_kills)]
    bursts = [await stalled(burst) for _ in range(3)] if burst else []
    walls = sorted(wall for wall, _, _ in stalls)
    clients.stdin.write(b"q\n")
    await clients.wait()
    server.close()
    return {
        "deliveries": deliveries,
        "bytes": received,
        "user_us": user / deliveries * 1e6,
        "system_us": system / deliveries * 1e6,
        "written_direct": hub.direct_writes,
        "stall_ms": max(walls, default=0.0),
        "stall_median_ms": walls[len(walls) // 2] if walls else 0.0,
        "stall_cpu_ms": max((cpu for _, cpu, _ in stalls), default=0.0),
        "burst_stall_ms": max((wall for wall, _, _ in bursts), default=0.0),
        "burst_stall_cpu_ms": max((cpu for _, cpu, _ in bursts), default=0.0),
        "burst_publish_cpu_ms": max((pub for _, _, pub in bursts), default=0.0),
    }


def _more_files(sockets: int) -> None:
    """Descriptors for `sockets` connections and a few more (the hard limit is the ceiling)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = sockets + 256 if hard == resource.RLIM_INFINITY else min(hard, sockets + 256)
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def _clients(port: int, sockets: int) -> None:
    """The helper process: connect `sockets` clients, then drain them whenever told (a line "d"
    on stdin; the bytes read go back as a line), until "q"."""
    _more_files(sockets)
    conns = []
    for _ in range(sockets):
        client = socket.create_connection(("127.0.0.1", port))
        client.setblocking(False)
        conns.append(client)
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "d":
            break
        got = 0
        for client in conns:
            while True:
                try:
                    data = client.recv(1 << 20)
                except BlockingIOError:
                    break
                if not data:
                    break
                got += len(data)
        print(got, flush=True)
    for client in conns:
        client.close()


def run_tree(
    root: Path, sockets: int, kills: int, stall_kills: int = 0, burst: int = 0, together: int = 1
) -> dict[str, Any]:
    """One measurement in a process running `root`'s killboard."""
    killmails = HERE.parent.parent / "tests" / "data" / "killmails"
    out = subprocess.run(
        [
            sys.executable,
            str(HERE),
            "--child",
            str(sockets),
            str(kills),
            str(killmails),
            str(stall_kills),
            str(burst),
            str(together),
        ],
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
    parser.add_argument("--stall-kills", type=int, default=20, help="kills published one at a time, probed")
    parser.add_argument("--burst", type=int, default=10, help="kills published in one step, probed (3 times)")
    parser.add_argument("--together", type=int, default=1, help="kills published in one step, for the CPU figure")
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
            row = {
                "name": name,
                "round": round_ + 1,
                **run_tree(root, args.sockets, args.kills, args.stall_kills, args.burst, args.together),
            }
            row["seconds"] = time.monotonic() - started
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    print(
        f"{args.sockets:,} deflate sockets on loopback, {args.kills} real kills, {args.together} a step,"
        f" load {os.getloadavg()}\n"
    )
    print(
        "| tree | round | user µs a delivery | system µs a delivery | total"
        f" | longest loop turn, one kill: wall (median) / CPU ms | {args.burst} kills at once: wall / CPU ms"
        " | their publish step: CPU ms |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        total = r["user_us"] + r["system_us"]
        print(
            f"| {r['name']} | {r['round']} | {r['user_us']:.2f} | {r['system_us']:.2f} | {total:.2f}"
            f" | {r['stall_ms']:.1f} ({r['stall_median_ms']:.1f}) / {r['stall_cpu_ms']:.1f}"
            f" | {r['burst_stall_ms']:.1f} / {r['burst_stall_cpu_ms']:.1f} | {r['burst_publish_cpu_ms']:.1f} |"
        )
    if args.json is not None:
        args.json.write_text(json.dumps({"rows": rows, "load": os.getloadavg()}, indent=1))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--clients":
        _clients(int(sys.argv[2]), int(sys.argv[3]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--child":
        sys.path.insert(0, os.getcwd())
        loaded = _load(Path(sys.argv[4]))
        counts = [int(a) for a in sys.argv[2:4] + sys.argv[5:8]]
        print(json.dumps(asyncio.run(_child(counts[0], counts[1], loaded, *counts[2:]))))
    else:
        main()
