"""Fan-out: N subscribers on the full feed while kills are POSTed at a steady rate.

    python -m bench.fanout [--subscribers 1000] [--rate 5] [--seconds 10] [--baseline DIR]
                           [--burst N] [--clients node|python] [--floor]

compares, in one run on the same real kills: Node's `ws` sending the plain frame
(bench/fanout_node.js, the reference of issue 21), then this tree with permessage-deflate
subscribers of every language on asyncio and on uvloop, and `--baseline DIR` (another
checkout, e.g. main) the same way. The subscribers are Node processes (bench/fanout_clients.js)
unless `--clients python`: cheap enough that the latency measured is the server's. Server CPU
is split into user and system time (the kernel's send() is the system part; what the server's
own code adds per socket is the user part). `--floor` adds bench/floor_server.py: a Python server
that only deflates each frame once and writes it to every socket: the kernel's send, which any
server pays, and asyncio's write.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from killboard.config import PROJECT_ROOT

from .data import real_killmails, stream, take
from .procstat import CLOCK_TICKS, cpu_seconds, load_average, raise_fd_limit
from .server import TOKEN, Process, Server
from .wsclient import Pool

AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process so far (fields 14 and 15 of /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


class NodeServer(Process):
    """bench/fanout_node.js on a free port: Node's `ws` broadcasting POSTed frames, plain."""

    name = "node"
    hint = " (npm ci --prefix tests/node?)"

    def spawn(self) -> subprocess.Popen[bytes]:
        env = {**os.environ, "NODE_PATH": str(PROJECT_ROOT / "tests" / "node" / "node_modules")}
        script = Path(__file__).with_name("fanout_node.js")
        return subprocess.Popen(["node", str(script), str(self.port)], env=env, preexec_fn=raise_fd_limit)


class FloorServer(Process):
    """bench/floor_server.py on a free port: the deflated frame written to every socket, nothing else."""

    name = "floor"

    def spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "bench.floor_server", str(self.port)], cwd=PROJECT_ROOT, preexec_fn=raise_fd_limit
        )


class NodeClients:
    """The subscribers in Node processes (bench/fanout_clients.js): what Pool does, cheaply enough
    that a kill's latency is the server's. 1,000 subscribers in 2 Python processes take ~20 ms to
    read one kill once each, and that wait is in every later socket's latency; Node's loop reads
    them several times faster. A socket's k-th kill frame is the k-th kill posted (the first
    socket of each process reads the ids, checked against the order posted)."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self.procs: list[asyncio.subprocess.Process] = []

    async def connect(self, host: str, port: int, total: int, deflate: bool = False) -> dict[str, Any]:
        script = Path(__file__).with_name("fanout_clients.js")
        share = [total // self.processes + (i < total % self.processes) for i in range(self.processes)]
        for n in share:
            self.procs.append(
                await asyncio.create_subprocess_exec(
                    "node",
                    str(script),
                    str(port),
                    str(n),
                    "1" if deflate else "0",
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    limit=1 << 28,  # a report is one line: 1,000 sockets x 100 kills of times
                    preexec_fn=raise_fd_limit,
                )
            )
        started = time.monotonic()
        results = await asyncio.gather(*(self._line(proc) for proc in self.procs))
        failed = sum(r["failed"] for r in results)
        if failed:
            raise RuntimeError(f"{failed} of {total} subscribers could not connect")
        return {"connected": sum(r["connected"] for r in results), "seconds": time.monotonic() - started}

    @staticmethod
    async def _line(proc: asyncio.subprocess.Process) -> Any:
        assert proc.stdout is not None
        line = await proc.stdout.readline()
        if not line:
            raise RuntimeError(f"a node client exited with {await proc.wait()} (npm ci --prefix tests/node?)")
        return json.loads(line)

    async def _all(self, command: str) -> list[Any]:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(command.encode() + b"\n")
        return list(await asyncio.gather(*(self._line(proc) for proc in self.procs)))

    async def received(self) -> int:
        return sum(await self._all("received"))

    async def reset(self) -> None:
        await self._all("reset")

    async def arrivals(self, order: list[int]) -> list[list[float]]:
        """Arrival times of the k-th kill posted at each socket, for each k; `order`: the kill
        ids as posted (each process's first socket must have got them in that order)."""
        out: list[list[float]] = [[] for _ in order]
        for report in await self._all("report"):
            if report["ids"] != order[: len(report["ids"])]:
                raise RuntimeError(f"kills arrived out of the order posted: {report['ids'][:5]}… vs {order[:5]}…")
            for k, times in enumerate(report["arrivals"][: len(order)]):
                out[k].extend(times)
        return out

    async def shutdown(self) -> None:
        for proc in self.procs:
            if proc.returncode is None and proc.stdin is not None:
                proc.stdin.write(b"exit\n")
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


@dataclass
class FanoutRun:
    subscribers: int
    kills: int
    rate: float
    frame_bytes: int
    deliveries: int
    expected: int
    seconds: float  # first POST to last arrival
    server_cpu: float
    latencies: list[float]
    connect_seconds: float
    user_cpu: float = 0.0
    system_cpu: float = 0.0
    first_latencies: list[float] = field(default_factory=list)  # per kill, its first receipt (Node clients)

    @property
    def deliveries_per_s(self) -> float:
        return self.deliveries / self.seconds if self.seconds else 0.0

    @property
    def cpu_per_1000(self) -> float:
        return self.server_cpu / self.deliveries * 1000 if self.deliveries else float("nan")

    def us_per_delivery(self, cpu: float) -> float:
        return cpu / self.deliveries * 1e6 if self.deliveries else float("nan")


async def post_one(session: aiohttp.ClientSession, url: str, km: dict[str, Any]) -> None:
    async with session.post(url + "/api/killmails", data=io.BytesIO(json.dumps(km).encode()), headers=AUTH) as resp:
        if resp.status != 202:
            raise RuntimeError(f"POST answered {resp.status}: {await resp.text()}")


def node_frame(km: dict[str, Any]) -> bytes:
    """The plain kill frame this server would send for `km` (enriched as the worker does)."""
    from killboard.kill.enrich import enrich
    from killboard.kill.frames import encode, kill_frame
    from killboard.kill.prices import price_book
    from killboard.kill.staticdata import load_static
    from killboard.kill.validate import parse_submission

    static = _STATIC.get("static")
    if static is None:
        static = _STATIC["static"] = load_static(PROJECT_ROOT / "data")
    body = encode(enrich(parse_submission(km), static, {}, price_book(static)))
    return kill_frame(km["killmail_id"], body)


_STATIC: dict[str, Any] = {}


def node_poster(frames: dict[int, bytes]) -> Poster:
    async def post(session: aiohttp.ClientSession, url: str, km: dict[str, Any]) -> None:
        async with session.post(url + "/frame", data=frames[km["killmail_id"]]) as resp:
            if resp.status != 202:
                raise RuntimeError(f"node answered {resp.status}")

    return post


Poster = Callable[[aiohttp.ClientSession, str, dict[str, Any]], Awaitable[None]]


async def post_steadily(
    session: aiohttp.ClientSession, url: str, kills: list[dict[str, Any]], rate: float, post: Poster = post_one
) -> tuple[dict[int, float], float]:
    """POST kills at a steady rate; returns (kill id -> when its POST left, the start time)."""
    posted: dict[int, float] = {}
    start = time.monotonic()
    for i, km in enumerate(kills):
        # A steady rate: each POST leaves at its slot, however long the last one took.
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        posted[km["killmail_id"]] = time.monotonic()
        await post(session, url, km)
    return posted, start


async def wait_received(pool: Pool | NodeClients, expected: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    got = await pool.received()
    while got < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        got = await pool.received()
    return got


async def run_fanout(
    workdir: Path,
    killmails: list[dict[str, Any]],
    subscribers: int,
    rate: float,
    seconds: float,
    processes: int,
    frame_bytes: int,
    big: dict[str, Any] | None = None,
    *,
    deflate: bool = False,
    env: dict[str, str] | None = None,
    root: Path = PROJECT_ROOT,
    node: bool = False,
    floor: bool = False,
    per_post: int = 1,
    clients: str = "python",
) -> FanoutRun:
    """One run on a fresh server and database. `big`: post copies of this kill instead.
    `deflate`: the subscribers offer permessage-deflate; `env`: the server's extra settings;
    `root`: the checkout that serves; `node`: bench/fanout_node.js serves instead (`floor`:
    bench/floor_server.py, which takes the same POSTs of frames); `per_post`:
    kills per POST (a burst: the worker stores them in one batch and they are due at once);
    `clients`: the subscribers in Python (bench/wsclient.py) or Node (bench/fanout_clients.js)."""
    server: Server | NodeServer | FloorServer
    if node:
        server = NodeServer()
    elif floor:
        server = FloorServer()
    else:
        server = Server(workdir / f"fanout-{subscribers}-{time.monotonic_ns()}.sqlite3", root=root, env=env)
    pool: Pool | NodeClients = NodeClients(processes) if clients == "node" else Pool(processes)
    try:
        await server.start()
        connected = await pool.connect("127.0.0.1", server.port, subscribers, deflate=deflate)
        source = stream([big] if big is not None else killmails)
        count = max(1, round(rate * seconds))
        warm = next(source)
        kills = take(source, count)
        post: Poster = post_one
        if node or floor:
            post = node_poster({km["killmail_id"]: node_frame(km) for km in [warm, *kills]})
        async with aiohttp.ClientSession() as session:
            # Warm-up: one kill to everyone (first-use costs: caches, buffers, page faults).
            await post(session, server.url, warm)
            await wait_received(pool, subscribers, 60)
            await pool.reset()
            cpu0 = cpu_seconds(server.pid)
            user0, sys0 = cpu_split(server.pid)
            if per_post > 1:
                post = _bursts(post, per_post, {km["killmail_id"]: km for km in kills})
                groups = [{"killmail_id": km["killmail_id"]} for km in kills[::per_post]]
                posted, start = await post_steadily(session, server.url, groups, rate / per_post, post)
                for i, km in enumerate(kills):
                    posted[km["killmail_id"]] = posted[kills[i - i % per_post]["killmail_id"]]
            else:
                posted, start = await post_steadily(session, server.url, kills, rate, post)
            expected = subscribers * count
            received = await wait_received(pool, expected, 60 + expected / 20_000)
            cpu = cpu_seconds(server.pid) - cpu0
            user1, sys1 = cpu_split(server.pid)
        first: list[float] = []
        if isinstance(pool, NodeClients):
            arrivals = await pool.arrivals([km["killmail_id"] for km in kills])
            latencies = sorted(
                t - posted[km["killmail_id"]] for km, times in zip(kills, arrivals, strict=True) for t in times
            )
            last = max((max(times) for times in arrivals if times), default=start)
            # The first socket to get each kill: the server's ingest, before the fan-out.
            first = sorted(
                min(times) - posted[km["killmail_id"]] for km, times in zip(kills, arrivals, strict=True) if times
            )
        else:
            latencies = sorted(await pool.latencies(posted))
            last = await pool.last_arrival()
        return FanoutRun(
            subscribers=subscribers,
            kills=count,
            rate=rate,
            frame_bytes=frame_bytes,
            deliveries=received,
            expected=expected,
            seconds=max(last - start, 1e-9),
            server_cpu=cpu,
            latencies=list(latencies),
            connect_seconds=connected["seconds"],
            user_cpu=user1 - user0,
            system_cpu=sys1 - sys0,
            first_latencies=first,
        )
    finally:
        try:
            await pool.shutdown()
        finally:
            server.stop()


def _bursts(post: Poster, per_post: int, by_id: dict[int, dict[str, Any]]) -> Poster:
    """A poster of `per_post` kills from the one named: one POST of a list to this server,
    the frames one after another to Node (its server sends each as it comes)."""
    order = list(by_id)

    async def burst(session: aiohttp.ClientSession, url: str, first: dict[str, Any]) -> None:
        i = order.index(first["killmail_id"])
        kills = [by_id[k] for k in order[i : i + per_post]]
        if post is post_one:
            async with session.post(
                url + "/api/killmails", data=io.BytesIO(json.dumps(kills).encode()), headers=AUTH
            ) as resp:
                if resp.status != 202:
                    raise RuntimeError(f"POST answered {resp.status}: {await resp.text()}")
        else:
            for km in kills:
                await post(session, url, km)

    return burst


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(len(values) * q / 100))]


async def compare(args: argparse.Namespace) -> dict[str, Any]:
    """Node plain, then this tree (and the baseline) with deflate subscribers, in one run."""
    killmails = real_killmails()
    scenarios: list[tuple[str, dict[str, Any]]] = [("Node ws, plain frame (reference)", {"node": True})]
    for loop in args.loops.split(","):
        scenarios.append((f"this tree, deflate, {loop}", {"deflate": True, "env": {"KILLBOARD_LOOP": loop}}))
    if args.baseline is not None:
        scenarios.append((f"baseline {args.baseline}, deflate", {"deflate": True, "root": args.baseline}))
    if args.floor:
        scenarios.append(("floor: the deflated frame written, nothing else", {"deflate": True, "floor": True}))
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        # What a kill costs this tree with nobody subscribed (HTTP, validation, enrichment,
        # storage): Node's server does none of it, so the delivery part is shown without it too.
        alone = await run_fanout(
            Path(tmp),
            killmails,
            0,
            args.rate,
            args.seconds,
            1,
            0,
            env={"KILLBOARD_LOOP": "asyncio"},
            per_post=args.burst,
        )
        per_kill = (alone.user_cpu / alone.kills, alone.system_cpu / alone.kills)
        print(f"per kill with no subscriber: {per_kill}", file=sys.stderr)
        for name, kw in scenarios:
            r = await run_fanout(
                Path(tmp),
                killmails,
                args.subscribers,
                args.rate,
                args.seconds,
                args.processes,
                0,
                per_post=args.burst,
                clients=args.clients,
                **kw,
            )
            lat = r.latencies
            fixed = (0.0, 0.0) if kw.get("node") or kw.get("floor") else per_kill
            row = {
                "name": name,
                "delivered": r.deliveries,
                "expected": r.expected,
                "us": r.us_per_delivery(r.server_cpu),
                "user_us": r.us_per_delivery(r.user_cpu),
                "sys_us": r.us_per_delivery(r.system_cpu),
                "send_user_us": r.us_per_delivery(r.user_cpu - fixed[0] * r.kills),
                "send_us": r.us_per_delivery(r.server_cpu - (fixed[0] + fixed[1]) * r.kills),
                "p50_ms": _pct(lat, 50) * 1e3,
                "p99_ms": _pct(lat, 99) * 1e3,
                "first_p50_ms": _pct(r.first_latencies, 50) * 1e3,
                "first_p99_ms": _pct(r.first_latencies, 99) * 1e3,
            }
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    ref = rows[0]
    print(f"A kill with no subscriber: {sum(per_kill) * 1e3:.2f} CPU-ms ({per_kill[0] * 1e3:.2f} user)")
    print(f"Subscribers: {args.subscribers:,} in {args.processes} {args.clients} processes\n")
    print(
        "| server | delivered | µs a delivery | ÷ Node | user µs | ÷ Node | system µs"
        " | less the kill's own cost: µs | ÷ Node | user µs | ÷ Node | p50 ms | p99 ms | first p50 ms | first p99 ms |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['name']} | {row['delivered']:,}/{row['expected']:,}"
            f" | {row['us']:.1f} | {_ratio(row['us'], ref['us'])}"
            f" | {row['user_us']:.1f} | {_ratio(row['user_us'], ref['user_us'])} | {row['sys_us']:.1f}"
            f" | {row['send_us']:.1f} | {_ratio(row['send_us'], ref['us'])}"
            f" | {row['send_user_us']:.1f} | {_ratio(row['send_user_us'], ref['user_us'])}"
            f" | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {row['first_p50_ms']:.1f} | {row['first_p99_ms']:.1f} |"
        )
    return {"rows": rows, "per_kill": per_kill, "load": load_average()}


def _ratio(value: Any, reference: Any) -> str:
    """value ÷ reference, or n/a where the reference took no CPU tick (/proc counts 10 ms ticks:
    a quick run's Node can cost none)."""
    return f"{value / reference:.2f}x" if reference > 0 else "n/a"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=5)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--loops", default="asyncio,uvloop", help="KILLBOARD_LOOP values to run this tree with")
    parser.add_argument("--baseline", type=Path, help="another checkout (e.g. /work/main) to run the same way")
    parser.add_argument("--processes", type=int, default=2, help="client processes (1 process is the bottleneck)")
    parser.add_argument("--burst", type=int, default=1, help="kills per POST (due in the same turn of the loop)")
    parser.add_argument(
        "--clients",
        choices=("node", "python"),
        default="node",
        help="the subscribers: Node (cheap: the latency is the server's) or Python (bench/wsclient.py)",
    )
    parser.add_argument("--floor", action="store_true", help="also run bench/floor_server.py (see above)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    raise_fd_limit()
    print(f"load average before: {load_average()}", file=sys.stderr)
    out = asyncio.run(compare(args))
    print(f"\nload average after: {out['load']}")
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
