"""The database's file system fills up during ingest: 503 with a clear message, nothing
acknowledged lost, and ingest and the worker recover by themselves once space returns."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import AUTH, Client, until
from fakes import FakeR2Z2, r2z2_object

from killboard.web.keys import follower_key, pipeline_key


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs: a file system the test can fill without touching the machine's disk."""
    mountpoint = tmp_path / "fs"
    mountpoint.mkdir()
    if os.geteuid() != 0:
        pytest.skip("disk-full test needs root to mount a small tmpfs (mount -t tmpfs)")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mountpoint)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"disk-full test cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def renumbered(killmails: list[dict[str, Any]], offset: int) -> list[dict[str, Any]]:
    return [{**km, "killmail_id": km["killmail_id"] + offset} for km in killmails]


def fill(path: Path, leave: int) -> None:
    """Write a ballast file that leaves about `leave` bytes free."""
    stat = os.statvfs(path.parent)
    size = max(stat.f_bavail * stat.f_frsize - leave, 0)
    with path.open("wb") as f:
        chunk = b"\0" * (1 << 20)
        while size > 0:
            try:
                size -= f.write(chunk[: min(size, len(chunk))])
            except OSError as exc:
                # The server wrote meanwhile (a follower keeps storing): the disk is full already.
                if exc.errno != errno.ENOSPC:
                    raise
                break


async def health(client: Client) -> dict[str, Any]:
    resp = await client.get("/health")
    assert resp.status == 200
    return await resp.json()


async def test_full_disk_answers_503_loses_nothing_and_recovers(
    make_client: Any, small_fs: Path, killmails: list[dict[str, Any]]
) -> None:
    client: Client = await make_client(db_path=small_fs / "kb.sqlite3", batch_size=20)
    ballast = small_fs / "ballast"
    fill(ballast, leave=256 * 1024)

    acknowledged: set[int] = set()
    refusal: dict[str, Any] | None = None
    for n in range(200):
        batch = renumbered(killmails[:20], n * 10**10)
        resp = await client.post("/api/killmails", data=json.dumps(batch), headers=AUTH)
        body = await resp.json()
        if resp.status == 503:
            refusal = body
            assert resp.headers["Retry-After"]
            break
        assert resp.status == 202, body
        acknowledged.update(body["accepted"])
    assert refusal is not None, "the file system never filled up"
    assert "storage unavailable" in refusal["error"] and "full" in refusal["error"], refusal
    assert acknowledged, "nothing was acknowledged before the disk filled"

    # The worker's side: kills acknowledged just before the last bytes go. The app runs in this
    # event loop, so filling the disk synchronously right after the 202 lands before its write.
    ballast.unlink()
    fill(ballast, leave=2 * 1024 * 1024)
    late = renumbered(killmails, 500 * 10**10)
    resp = await client.post("/api/killmails", data=json.dumps(late), headers=AUTH)
    assert resp.status == 202, await resp.text()
    acknowledged.update((await resp.json())["accepted"])
    fill(small_fs / "ballast2", leave=0)
    await until(lambda: _worker_refused(client), timeout=10)
    (small_fs / "ballast2").unlink()

    # Space returns: without a restart, the worker stores every acknowledged kill and ingest works.
    ballast.unlink()
    more = renumbered(killmails[:5], 999 * 10**10)
    for _ in range(100):
        resp = await client.post("/api/killmails", data=json.dumps(more), headers=AUTH)
        if resp.status == 202:
            acknowledged.update((await resp.json())["accepted"])
            break
        await asyncio.sleep(0.1)
    assert resp.status == 202, await resp.text()
    state: dict[str, Any] = {}
    for _ in range(300):
        state = await health(client)
        if state["kills"] == len(acknowledged) and state["inbox"] == 0:
            break
        await asyncio.sleep(0.05)
    assert state["kills"] == len(acknowledged) and state["inbox"] == 0, state
    assert state["status"] == "ok" and state["store_error"] is None
    assert client.server.app[pipeline_key].failed > 0, "the worker never hit the full disk"

    stored: list[int] = []
    after = 0
    while True:
        resp = await client.get(f"/api/killmails?after={after}&limit=500")
        page = await resp.json()
        stored += [k["killmail_id"] for k in page["killmails"]]
        if not page["killmails"]:
            break
        after = page["next_after"]
    assert sorted(stored) == sorted(acknowledged)  # every acknowledged kill, exactly once


async def test_full_disk_pauses_the_r2z2_follower_without_losing_its_place(
    make_client: Any, small_fs: Path, killmails: list[dict[str, Any]]
) -> None:
    fake = FakeR2Z2()
    url = await fake.start()
    try:
        for seq in range(1, 41):
            km = killmails[seq % len(killmails)]
            fake.publish(seq, r2z2_object({**km, "killmail_id": km["killmail_id"] + seq * 10**10}, seq))
        fake.current = 1
        client: Client = await make_client(
            db_path=small_fs / "kb.sqlite3",
            upstream=True,
            r2z2_url=url,
            esi_url=url,  # no ESI here: names stay empty, which is fine for this test
            r2z2_wait=0.05,
            r2z2_rate=1000.0,
            backoff_min=0.05,
            backoff_max=0.2,
            names_wait=0.1,
        )
        follower = client.server.app[follower_key]
        await until(lambda: _at_least(client, 3))
        ballast = small_fs / "ballast"
        fill(ballast, leave=0)
        for seq in range(41, 301):  # more to take while the disk is full
            km = killmails[seq % len(killmails)]
            fake.publish(seq, r2z2_object({**km, "killmail_id": km["killmail_id"] + seq * 10**10}, seq))
        await until(lambda: _store_failing(client), timeout=20)
        await asyncio.sleep(0.5)
        assert follower.state.running, "the follower died on the full disk"
        ballast.unlink()
        await until(lambda: _at_least(client, 300), timeout=30)
        state = await health(client)
        assert state["upstream"]["skipped_sequences"] == 0
        assert state["kills"] == 300 and state["store_error"] is None
    finally:
        await fake.close()


async def _worker_refused(client: Client) -> bool:
    state = await health(client)
    return bool(state["store_error"] and state["status"] == "degraded")


async def _at_least(client: Client, n: int) -> bool:
    state = await health(client)
    return bool(state["kills"] >= n and state["inbox"] == 0)


async def _store_failing(client: Client) -> bool:
    state = await health(client)
    return state["store_error"] is not None or "full" in str(state["upstream"]["last_error"])


async def test_a_kill_posted_alone_on_a_full_disk_answers_503_then_is_stored_once(
    make_client: Any, small_fs: Path, killmails: list[dict[str, Any]]
) -> None:
    # Stored by its own request (no inbox, Pipeline._store_alone): the failed transaction
    # acknowledges nothing, and the same kill posted again once there is room is stored once.
    client: Client = await make_client(db_path=small_fs / "kb.sqlite3")
    ballast = small_fs / "ballast"
    fill(ballast, leave=0)
    refused = None
    for n, km in enumerate(renumbered(killmails, 10**10) * 3):
        resp = await client.post(
            "/api/killmails", data=json.dumps({**km, "killmail_id": km["killmail_id"] + n}), headers=AUTH
        )
        if resp.status == 503:
            refused = {**km, "killmail_id": km["killmail_id"] + n}
            body = await resp.json()
            assert "storage unavailable" in body["error"] and resp.headers["Retry-After"], body
            break
        assert resp.status == 202, await resp.text()
    assert refused is not None, "the file system never filled up"
    assert (await health(client))["store_error"] is None  # the worker was never involved
    ballast.unlink()
    kills_before = (await health(client))["kills"]
    resp = await client.post("/api/killmails", data=json.dumps(refused), headers=AUTH)
    assert resp.status == 202 and (await resp.json())["accepted"] == [refused["killmail_id"]]
    state = await health(client)
    assert state["kills"] == kills_before + 1 and state["inbox"] == 0, state
