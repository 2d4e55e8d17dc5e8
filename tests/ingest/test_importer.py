"""`python app.py import`: every input form lands each kill once, bad input is reported, and it
runs beside a live server on the same database without its kills being broadcast."""

from __future__ import annotations

import asyncio
import bz2
import gzip
import io
import json
import sqlite3
import subprocess
import sys
import tarfile
from contextlib import closing
from pathlib import Path
from typing import Any

import aiohttp
from conftest import until
from fakes import DATA, r2z2_object
from serverproc import ServerProcess

from killboard.config import PROJECT_ROOT, Config
from killboard.ingest import importer
from killboard.ingest.importer import run_import
from killboard.storage.store import Store


def build_everef_archive(path: Path, killmails: list[dict[str, Any]], extra: dict[str, bytes] | None = None) -> Path:
    """An EVE Ref daily archive: `killmails/{id}.json` holding ESI's body verbatim (no hash)."""
    with tarfile.open(path, "w:bz2") as archive:
        members = {
            f"killmails/{km['killmail_id']}.json": json.dumps(
                {k: v for k, v in km.items() if k != "killmail_hash"}
            ).encode()
            for km in killmails
        }
        for name, data in {**members, **(extra or {})}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


async def stored_ids(db: Path) -> list[int]:
    store = await Store.open(db)
    try:
        return [k.killmail_id for k in await store.after(0, 10_000)]
    finally:
        await store.close()


async def test_every_input_form_lands_each_kill_once(
    tmp_path: Path, config: Config, killmails: list[dict[str, Any]]
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    kms = killmails
    (inputs / "one.json").write_text(json.dumps(kms[0]))
    (inputs / "array.json").write_text(json.dumps(kms[1:6]))
    (inputs / "r2z2.json").write_text(json.dumps(r2z2_object(kms[6], 1)))
    (inputs / "redisq.json").write_text((DATA / "zkillboard" / "redisq_119455394.json").read_text())
    (inputs / "lines.jsonl").write_text("\n".join(json.dumps(km) for km in kms[7:12]) + "\n\n")
    sub = inputs / "nested"
    sub.mkdir()
    (sub / "more.jsonl").write_text("\n".join(json.dumps(km) for km in kms[12:15]))
    (sub / "broken.json").write_text("{not json")
    (sub / "notes.txt").write_text("ignored: not a killmail file type")
    archive_kills = kms[15:60]
    archive = build_everef_archive(
        tmp_path / "killmails-2026-03-25.tar.bz2", archive_kills, extra={"killmails/bad.json": b"[1, 2"}
    )
    bad_item = dict(kms[60])
    del bad_item["victim"]
    (inputs / "bad-item.jsonl").write_text(json.dumps(bad_item) + "\n" + json.dumps(kms[61]))

    out, err = io.StringIO(), io.StringIO()
    summary = await run_import(config, [inputs, archive], out=out, err=err, tty=False)

    expected = {km["killmail_id"] for km in kms[:62] if km is not kms[60]} | {119455394}
    ids = await stored_ids(config.db_path)
    assert len(ids) == len(set(ids))
    assert set(ids) == expected
    assert summary.imported == len(expected)
    assert summary.rejected == 3
    problems = "\n".join(summary.problems)
    assert f"{sub / 'broken.json'}: not JSON" in problems
    assert f"{archive}:killmails/bad.json: not JSON" in problems
    assert f"{inputs / 'bad-item.jsonl'}:1: victim: required object" in problems
    assert "rejected: " in err.getvalue()  # reported as they happen
    # Not a terminal: the rejections and nothing else (no bar in a log or a cron mail).
    assert all(line.startswith("rejected: ") for line in err.getvalue().splitlines()), err.getvalue()
    assert out.getvalue().strip().endswith(f"imported {len(expected)}, duplicates {summary.duplicates}, rejected 3")

    # Again: nothing new, everything a duplicate.
    again = await run_import(config, [inputs, archive], out=io.StringIO(), err=io.StringIO(), tty=False)
    assert again.imported == 0
    assert again.duplicates == len(expected) + summary.duplicates
    assert sorted(await stored_ids(config.db_path)) == sorted(ids)

    store = await Store.open(config.db_path)
    archived = await store.get(archive_kills[0]["killmail_id"])
    assert await store.inbox_count() == 0
    await store.close()
    assert archived is not None
    body = json.loads(archived.body)
    assert body["attacker_count"] == len(archive_kills[0]["attackers"])
    assert body["killmail_hash"] == ""  # EVE Ref keeps ESI's body verbatim: no hash to store


async def test_progress_bar_on_a_terminal(tmp_path: Path, config: Config, killmails: list[dict[str, Any]]) -> None:
    path = tmp_path / "all.json"
    path.write_text(json.dumps(killmails[:10]))
    err = io.StringIO()
    await run_import(config, [path, tmp_path / "missing.json"], out=io.StringIO(), err=err, tty=True)
    shown = err.getvalue()
    final = shown.split("\r")[-1]  # tqdm redraws the bar in place
    assert final.startswith("import: 100%|"), shown  # the whole input read
    assert "10 kills" in final
    assert f"rejected: {tmp_path / 'missing.json'}: no such file or directory" in shown


async def test_import_beside_a_running_server_is_not_broadcast(tmp_path: Path, killmails: list[dict[str, Any]]) -> None:
    token = "import-token"
    db = tmp_path / "kb.sqlite3"
    archive = build_everef_archive(tmp_path / "killmails-2026-03-25.tar.bz2", killmails[:70])
    server = ServerProcess(db, env={"KILLBOARD_INGEST_TOKEN": token})
    try:
        await server.start()
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as session:
            ws = await session.ws_connect(server.url + "/ws")
            await ws.send_json({"action": "sub", "channel": "kills"})
            assert (await ws.receive_json(timeout=5))["action"] == "subscribed"
            importing = await asyncio.create_subprocess_exec(
                sys.executable,
                "app.py",
                "--no-upstream",
                "--db",
                str(db),
                "import",
                str(archive),
                cwd=PROJECT_ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            # Live kills keep arriving over HTTP while the import writes to the same file.
            live = killmails[70:]
            for km in live:
                async with session.post(server.url + "/api/killmails", json=km) as resp:
                    assert resp.status == 202
            out, err = await asyncio.wait_for(importing.communicate(), 20)
            assert importing.returncode == 0, err.decode()
            assert "imported 70, duplicates 0, rejected 0" in out.decode()

            frames = [await ws.receive_json(timeout=5) for _ in live]
            assert sorted(f["data"]["killmail_id"] for f in frames) == sorted(km["killmail_id"] for km in live)

            async def all_there() -> bool:
                async with session.get(server.url + "/health") as resp:
                    return (await resp.json())["kills"] == len(killmails)

            await until(all_there)
            # Nothing of the import was pushed live.
            try:
                leftover = await ws.receive_json(timeout=0.5)
            except TimeoutError:
                leftover = None
            assert leftover is None
            await ws.close()
    finally:
        server.stop()


async def test_an_import_killed_half_way_is_finished_by_the_rerun(tmp_path: Path, killmails: list[Any]) -> None:
    """kill -9 while `app.py import` has kills in the inbox: the re-run stores them (it used to
    call them duplicates and leave them there until a server start)."""
    total = 6000
    source = tmp_path / "kills.jsonl"
    with source.open("w") as f:
        for n in range(total):
            f.write(json.dumps({**killmails[n % len(killmails)], "killmail_id": 10**9 + n}) + "\n")
    db = tmp_path / "kb.sqlite3"
    command = [sys.executable, "app.py", "import", "--no-upstream", "--db", str(db), str(source)]
    left_behind = 0
    for _ in range(5):  # the kill must land while a batch is in the inbox; it nearly always does
        proc = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(4000):
                if db.exists() and count(db, "kills") >= 400 and count(db, "inbox") > 0:
                    break
                await asyncio.sleep(0.005)
        finally:
            proc.kill()
            proc.wait(10)
        left_behind = count(db, "inbox")
        if left_behind and count(db, "kills") < total:
            break
    assert left_behind > 0, "the import was never killed with kills in its inbox"

    rerun = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert count(db, "inbox") == 0
    assert sorted(await stored_ids(db)) == [10**9 + n for n in range(total)]  # each once
    imported = int(rerun.stdout.split("imported ")[1].split(",")[0])
    assert imported >= left_behind  # what the inbox held counts as imported now, not as a duplicate


def count(db: Path, table: str) -> int:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
        try:
            return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
        except sqlite3.OperationalError:  # not created yet
            return 0


async def test_gzip_and_bzip2_files_import_like_plain_ones_and_a_wrong_folder_is_said(
    tmp_path: Path, config: Config, killmails: list[dict[str, Any]], monkeypatch: Any
) -> None:
    """A real fight as its archive keeps it (.json.gz), killmails as .jsonl.bz2 and as two gzip
    members one after the other; a truncated file, a file that is not gzip and one that
    decompresses past the bound are each rejected with the reason, and the rest imported."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    fight = PROJECT_ROOT / "tests" / "data" / "battles" / "everef-2021-11-27-sys30001155" / "killmails.json.gz"
    (inputs / "fight.json.gz").write_bytes(fight.read_bytes())
    fight_ids = {km["killmail_id"] for km in json.loads(gzip.decompress(fight.read_bytes()))}
    (inputs / "lines.jsonl.bz2").write_bytes(bz2.compress("\n".join(json.dumps(k) for k in killmails[:5]).encode()))
    members = b"".join(gzip.compress(json.dumps(k).encode() + b"\n") for k in killmails[5:8])
    (inputs / "members.jsonl.gz").write_bytes(members)
    (inputs / "truncated.json.gz").write_bytes(gzip.compress(json.dumps(killmails[8]).encode())[:-20])
    (inputs / "plain.json.gz").write_text(json.dumps(killmails[9]))
    (inputs / "bomb.json.gz").write_bytes(gzip.compress(b"[" + b" " * 3_000_000 + b"]"))
    monkeypatch.setattr(importer, "MAX_INFLATED", 2_000_000)  # the fight is ~0.9 MB

    other = tmp_path / "notes"  # a folder with no killmail file in it
    other.mkdir()
    (other / "readme.txt").write_text("not a killmail")

    summary = await run_import(config, [inputs, other], out=io.StringIO(), err=io.StringIO(), tty=False)

    expected = fight_ids | {k["killmail_id"] for k in killmails[:8]}
    assert set(await stored_ids(config.db_path)) == expected
    assert summary.imported == len(expected) and summary.rejected == 4
    problems = "\n".join(summary.problems)
    assert f"{inputs / 'truncated.json.gz'}: not a readable gzip file" in problems
    assert f"{inputs / 'plain.json.gz'}: not a readable gzip file" in problems
    assert f"{inputs / 'bomb.json.gz'}: decompresses to more than 2,000,000 bytes" in problems
    assert f"{other}: no .json, .jsonl, .json.gz, .jsonl.gz, .json.bz2, .jsonl.bz2, .tar.bz2 file in it" in problems
