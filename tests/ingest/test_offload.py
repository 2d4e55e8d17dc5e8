"""Fleet fights in the worker process (ingest/offload.py): the same bytes, rows and frames as the
kill made in this process, and nothing lost when the worker dies."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import ujson

from bench.data import fleet_fight
from bench.procstat import children
from killboard.config import PROJECT_ROOT
from killboard.ingest.offload import BIG_BODY, BIG_KILL, STUCK, Offload, Packed, new_kill
from killboard.ingest.pipeline import build_kill, kill_size
from killboard.ingest.queue import inbox_payload
from killboard.kill.codec import decode, player_ids, renderer
from killboard.kill.enrich import enrich
from killboard.kill.frames import encode
from killboard.kill.prices import price_book
from killboard.kill.staticdata import StaticData
from killboard.kill.topics import kill_facts
from killboard.kill.validate import parse_submission
from killboard.storage.participants import pack
from killboard.storage.rows import InboxRow
from killboard.storage.store import Store
from killboard.web.keys import pipeline_key, store_key
from tests.conftest import AUTH, TOKEN, Client, settle, until
from tests.serverproc import ServerProcess

MakeClient = Callable[..., Awaitable[Client]]


def named(km: dict[str, Any]) -> dict[int, str]:
    """Names for some of the kill's players: enrichment and the stored names depend on them."""
    return {i: f"Pilot {i}" for i in sorted(player_ids(km))[::3]}


async def test_a_fleet_fight_made_in_the_worker_is_the_one_made_here(
    static: StaticData, killmails: list[dict[str, Any]]
) -> None:
    km = fleet_fight(killmails, 3000)
    names = named(km)
    prices = price_book(static)
    sub = parse_submission(km)
    kill = enrich(sub, static, names, prices)
    here = build_kill(sub, kill, names)
    offload = Offload(PROJECT_ROOT / "data")
    try:
        parsed = await offload.parse(ujson.dumps([km, killmails[0]]).encode(), 10, False)
        assert parsed is not None and not isinstance(parsed, str)
        count, subs, rejected = parsed
        assert (count, rejected) == (2, [])
        packed, small = subs
        # Several kills come back as their inbox payloads, a small one too (the server would only
        # encode it again); one small kill alone comes back whole (it may be stored alone).
        assert isinstance(packed, Packed) and isinstance(small, Packed)
        assert small.unpacked() == parse_submission(killmails[0])
        assert small.payload == inbox_payload(parse_submission(killmails[0]))
        assert small.size == kill_size(parse_submission(killmails[0])) <= BIG_KILL
        alone = await offload.parse(ujson.dumps(killmails[0]).encode(), 10, False)
        assert alone is not None and not isinstance(alone, str)
        assert alone[1] == [parse_submission(killmails[0])] and not isinstance(alone[1][0], Packed)
        assert packed.payload == inbox_payload(sub)
        assert packed.size == kill_size(sub) == 3000 + len(km["victim"].get("items", []))
        assert packed.player_ids() == player_ids(km)

        done = await offload.enrich(packed, names, prices, True)
        assert done is not None
        there = new_kill(packed, done, names)
        assert there.body == encode(kill) == here.body
        assert there.source == here.source
        columns = ("kill_time", "system_id", "total_value")
        assert [getattr(there, c) for c in columns] == [getattr(here, c) for c in columns]
        assert there.names == here.names
        assert here.participation is not None and there.participation is not None
        assert there.participation.pilots == here.participation.pilots
        assert there.participation.entities == here.participation.entities
        assert there.participation.packed == pack(here.participation.pilots)
        assert done.facts == kill_facts(kill)

        async def lookup(ids: set[int]) -> dict[int, str]:
            assert ids == player_ids(km)
            return {i: n for i, n in names.items() if i in ids}

        rendered = await offload.render(prices, sub.killmail_id, sub.killmail_hash, here.source, lookup)
        source, frozen = decode(sub.killmail_id, sub.killmail_hash, here.source)
        assert rendered == renderer(static, prices)(source, names, frozen) == encode(kill)
        assert (offload.started, offload.lost) == (1, 0)
    finally:
        await offload.close()
    assert await offload.parse(b"[]", 10, False) is None  # closed: the caller does it here


async def _stored(client: Client) -> dict[str, list[tuple[Any, ...]]]:
    store = client.server.app[store_key]
    return {
        table: await store.query(f"SELECT {columns} FROM {table} ORDER BY 1, 2")
        for table, columns in (
            ("kills", "seq, killmail_id, killmail_hash, kill_time, system_id, total_value, body, codec"),
            ("participants", "seq, pilots"),
            ("entity_kills", "kind, id, block, seqs"),
            ("names", "id, name"),
            ("battle_kills", "*"),
            ("entity_months", "*"),
        )
    }


async def _post_and_watch(client: Client, kills: list[dict[str, Any]], as_one: bool = False) -> list[bytes]:
    """POST each kill on its own, in order (`as_one`: all in one array), with a subscriber on
    `kills`; the frames it got."""
    async with client.ws_connect("/ws", max_msg_size=64 << 20) as ws:
        await ws.send_json({"action": "sub", "channel": "kills"})
        await ws.receive(5)
        for body in [kills] if as_one else kills:
            resp = await client.post("/api/killmails", data=json.dumps(body).encode(), headers=AUTH)
            assert resp.status == 202, await resp.text()
        frames = []
        while len(frames) < len(kills):
            msg = await ws.receive(30)
            assert msg.type == aiohttp.WSMsgType.TEXT
            if msg.data.startswith('{"action":"kill"'):
                frames.append(msg.data.encode())
    await settle(client)
    return frames


async def test_a_fleet_fight_through_the_worker_stores_and_sends_what_the_in_process_path_does(
    make_client: MakeClient, killmails: list[dict[str, Any]], tmp_path: Path
) -> None:
    big = fleet_fight(killmails, 3000)
    assert len(json.dumps(big)) > BIG_BODY
    # A small kill right behind the big one: the worker must not let it overtake.
    kills = [big, killmails[0], fleet_fight(killmails, 600) | {"killmail_id": 1}]
    worker = await make_client()
    here = await make_client(db_path=tmp_path / "here.sqlite3")
    here.server.app[pipeline_key].offload = None  # the in-process path (threads), as before
    here.server.app[store_key].render_big = None

    frames = await _post_and_watch(worker, kills)
    assert frames == await _post_and_watch(here, kills)
    assert [ujson.loads(f)["data"]["killmail_id"] for f in frames] == [k["killmail_id"] for k in kills]
    offload = worker.server.app[pipeline_key].offload
    assert offload is not None and offload.started == 1  # the big kills went through it
    assert await _stored(worker) == await _stored(here)
    for km in kills:
        for query in ("", "?lang=de"):
            url = f"/api/killmails/{km['killmail_id']}{query}"
            got, want = await (await worker.get(url)).read(), await (await here.get(url)).read()
            assert got == want


async def test_a_killed_worker_is_replaced_and_loses_no_kill(
    make_client: MakeClient, killmails: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    client = await make_client()
    offload = client.server.app[pipeline_key].offload
    assert offload is not None
    kills = [fleet_fight(killmails, 3000) | {"killmail_id": 10 + i} for i in range(4)]
    frames = await _post_and_watch(client, kills[:1])
    pid = offload.pid()
    assert pid is not None and offload.started == 1
    os.kill(pid, signal.SIGKILL)
    caplog.set_level(logging.WARNING, "killboard.ingest.offload")
    # The next kill finds it dead: parsed and enriched here, in threads.
    frames += await _post_and_watch(client, kills[1:2])
    assert (offload.started, offload.lost) == (1, 1)
    # Its own lines only: records of other loggers are kept too where logging was set up at INFO.
    assert [r.message for r in caplog.records if r.name == "killboard.ingest.offload"] == [
        "the big-kill worker process died: its kills are done in this process, a new one starts"
    ]
    # The one after it starts a new worker.
    frames += await _post_and_watch(client, kills[2:3])
    assert offload.started == 2 and offload.pid() not in (None, pid)
    # Killed while it has a kill: that kill is done here, none is lost.
    pid = offload.pid()
    assert pid is not None
    resp = await client.post("/api/killmails", data=json.dumps(kills[3]).encode(), headers=AUTH)
    assert resp.status == 202
    os.kill(pid, signal.SIGKILL)
    await settle(client)
    for km, frame in zip(kills, frames, strict=False):
        resp = await client.get(f"/api/killmails/{km['killmail_id']}")
        assert resp.status == 200
        assert ujson.loads(frame)["data"] == await resp.json()
    assert [ujson.loads(f)["data"]["killmail_id"] for f in frames] == [10, 11, 12]
    resp = await client.get(f"/api/killmails/{kills[3]['killmail_id']}")
    assert resp.status == 200 and (await resp.json())["attacker_count"] == 3000
    assert await client.server.app[store_key].inbox_count() == 0


async def test_a_stopped_worker_is_killed_and_what_it_held_is_done_here(
    make_client: MakeClient, killmails: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    """A worker that stops answering (here SIGSTOP: a deadlock looks the same from outside)
    held a POST's parse forever: it is killed once a call has waited `stuck_after`, the POST is
    answered from this process, its kill stored, and the next big kill gets a new worker."""
    client = await make_client()
    offload = client.server.app[pipeline_key].offload
    assert offload is not None
    kills = [fleet_fight(killmails, 3000) | {"killmail_id": 10 + i} for i in range(3)]
    await _post_and_watch(client, kills[:1])
    pid = offload.pid()
    assert pid is not None and offload.started == 1
    offload.stuck_after = 1.0
    caplog.set_level(logging.WARNING, "killboard.ingest.offload")
    os.kill(pid, signal.SIGSTOP)
    try:
        frames = await asyncio.wait_for(_post_and_watch(client, kills[1:2]), 30)
    finally:
        offload.stuck_after = STUCK  # a new worker's start may take longer than 1 s on a busy machine
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    assert (offload.stuck, offload.lost) == (1, 1)
    assert [r.message for r in caplog.records if r.name == "killboard.ingest.offload"][:2] == [
        "the big-kill worker process did not answer in 1 s: killed",
        "the big-kill worker process died: its kills are done in this process, a new one starts",
    ]

    async def gone() -> bool:
        return pid not in children(os.getpid())

    await until(gone, 10)
    frames += await _post_and_watch(client, kills[2:])
    assert offload.pid() not in (None, pid) and offload.stuck == 1
    assert [ujson.loads(f)["data"]["killmail_id"] for f in frames] == [11, 12]
    resp = await client.get("/api/killmails/11")
    assert resp.status == 200 and (await resp.json())["attacker_count"] == 3000


def _die_halfway_through_an_answer() -> bytes:
    """In the worker: the start of a 1 MB answer written to the pool's answer pipe, then death,
    as when the OOM killer takes a worker that is sending a fleet fight back."""
    frame = sys._getframe()
    while frame is not None and "result_queue" not in frame.f_locals:  # the pool's worker loop
        frame = frame.f_back
    assert frame is not None
    writer = frame.f_locals["result_queue"]._writer
    os.write(writer.fileno(), struct.pack("!i", 1_000_000) + b"the first bytes")
    os.kill(os.getpid(), signal.SIGKILL)
    return b"never"


async def test_a_worker_killed_halfway_through_an_answer_is_found_dead_at_once() -> None:
    """Python 3.11's pool waited for the rest of that answer for ever: the call waited
    `stuck_after`, and close() (which joins the pool's thread) never ended."""
    offload = Offload(PROJECT_ROOT / "data")
    try:
        assert await offload.call(os.getpid) is not None  # a worker up, and watched
        started = time.monotonic()
        assert await offload.call(_die_halfway_through_an_answer) is None  # to be done here
        assert time.monotonic() - started < 10 < STUCK
        assert (offload.lost, offload.stuck) == (1, 0)
        assert await offload.call(os.getpid) not in (None, os.getpid())  # a new worker
    finally:
        await asyncio.wait_for(offload.close(), 10)


async def test_a_fleet_fight_left_in_the_inbox_is_stored_through_the_worker(
    make_client: MakeClient, killmails: list[dict[str, Any]], tmp_path: Path, static: StaticData
) -> None:
    km = fleet_fight(killmails, 3000)
    sub = parse_submission(km)
    store = await Store.open(tmp_path / "kb.sqlite3")
    await store.add_to_inbox([InboxRow(sub.killmail_id, inbox_payload(sub), "http", True)])
    await store.close()
    client = await make_client()  # the same database: recovery queues the acknowledged kill

    async def stored() -> bool:
        return (await client.get(f"/api/killmails/{sub.killmail_id}")).status == 200

    await until(stored)
    body = await (await client.get(f"/api/killmails/{sub.killmail_id}")).read()
    assert body == b'{"seq":1,' + encode(enrich(sub, static, {}, price_book(static)))[1:]
    offload = client.server.app[pipeline_key].offload
    assert offload is not None and offload.started == 1


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b'{"killmail_id": 1, ' + b" " * BIG_BODY + b"}}", 400, "body is not valid JSON: "),
        (b"[" + b" " * BIG_BODY + b"]", 400, "empty array: send one killmail or an array of killmails"),
        (json.dumps([{"killmail_id": i} for i in range(30_000)]).encode(), 413, "too many killmails in one request"),
    ],
)
async def test_a_bad_big_body_is_a_precise_4xx(client: Client, body: bytes, status: int, message: str) -> None:
    assert len(body) > BIG_BODY
    resp = await client.post("/api/killmails", data=body, headers=AUTH)
    assert resp.status == status
    assert (await resp.json())["error"].startswith(message)


async def test_a_big_kill_with_a_bad_field_is_rejected_with_its_path(
    client: Client, killmails: list[dict[str, Any]]
) -> None:
    km = fleet_fight(killmails, 3000)
    km["attackers"][2000] = {**km["attackers"][2000], "final_blow": "yes"}
    resp = await client.post("/api/killmails", data=json.dumps(km).encode(), headers=AUTH)
    assert resp.status == 422
    rejected = (await resp.json())["rejected"]
    assert rejected == [{"index": 0, "errors": ["attackers[2000].final_blow: required boolean"]}]
    offload = client.server.app[pipeline_key].offload
    assert offload is not None and offload.started == 1  # refused by the worker, as it would be here


def _running(pid: int) -> bool:
    """Whether the process exists and is not a zombie (one its new parent has not reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def _start_with_worker(server: ServerProcess, killmails: list[dict[str, Any]]) -> int:
    """Start `server`, then POST more than WORKER_BATCH ordinary kills so that its worker starts;
    returns the server's pid once its worker process is there."""
    await server.start()
    assert server.proc is not None
    pid = server.proc.pid
    async with (
        aiohttp.ClientSession(headers=AUTH) as session,
        session.post(server.url + "/api/killmails", data=json.dumps(killmails).encode()) as resp,
    ):
        assert resp.status == 202, await resp.text()

    async def started() -> bool:
        return bool(_workers(pid))

    await until(started, 30)
    return pid


def _workers(pid: int) -> list[int]:
    """The server's worker processes: its children but multiprocessing's resource tracker."""
    return [c for c in children(pid) if b"resource_tracker" not in Path(f"/proc/{c}/cmdline").read_bytes()]


async def test_a_server_with_a_stopped_worker_still_stops(tmp_path: Path, killmails: list[dict[str, Any]]) -> None:
    """SIGTERM while the worker is stopped (SIGSTOP: it can neither end nor see its parent go):
    the server kills it after CLOSE_WAIT and exits 0 instead of waiting for it forever, and no
    stopped worker is left behind."""
    server = ServerProcess(tmp_path / "kb.sqlite3", env={"KILLBOARD_INGEST_TOKEN": TOKEN})
    try:
        pid = await _start_with_worker(server, killmails)
        stopped = _workers(pid)
        for worker in stopped:
            os.kill(worker, signal.SIGSTOP)
        server.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(server.proc.wait, 20) == 0

        async def gone() -> bool:
            return not any(_running(worker) for worker in stopped)

        await until(gone, 10)
    finally:
        server.stop()


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="reads /proc")
@pytest.mark.parametrize("after", [0.0, 0.15, 0.3, 1.5])
async def test_the_worker_ends_when_the_server_is_killed(
    tmp_path: Path, killmails: list[dict[str, Any]], after: float
) -> None:
    """A server killed with SIGKILL cannot shut its worker down; the worker must not outlive it
    (115 orphans of ~80 MB each were found after a few test runs), whether the server dies while
    the worker is still starting (`after` its process appeared; it is ~0.5 s importing) or once it
    is up."""
    server = ServerProcess(tmp_path / "kb.sqlite3", env={"KILLBOARD_INGEST_TOKEN": TOKEN})
    try:
        pid = await _start_with_worker(server, killmails)
        workers = children(pid)
        await asyncio.sleep(after)
        server.kill()

        async def gone() -> bool:
            return not any(_running(worker) for worker in workers)

        await until(gone, 10)  # times out if the worker outlives the killed server
    finally:
        server.stop()
