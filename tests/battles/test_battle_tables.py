"""The battle tables in the kills' transaction: a rolled-back batch leaves memory and database agreeing."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from battlefights import fight

from killboard.battles.service import Battles
from killboard.ingest.pipeline import Stored, build_kill
from killboard.kill.enrich import enrich
from killboard.kill.prices import price_book
from killboard.kill.staticdata import StaticData
from killboard.kill.validate import parse_submission
from killboard.live.hub import Hub
from killboard.storage.rows import NewKill
from killboard.storage.store import Store


def new_kills(kms: list[dict[str, Any]], static: StaticData) -> list[NewKill]:
    prices = price_book(static)
    return [build_kill(sub, enrich(sub, static, {}, prices)) for sub in map(parse_submission, kms)]


class FailingWriter:
    """A writer after the battles' that fails while `failing` is set: the kills' transaction rolls back."""

    def __init__(self) -> None:
        self.failing = True

    def __call__(self, db: sqlite3.Connection, new: Sequence[tuple[int, NewKill]]) -> None:
        if self.failing:
            raise OSError("disk full (a test)")


@asynccontextmanager
async def battles_store(tmp_path: Path, static: StaticData) -> AsyncIterator[tuple[Store, Battles]]:
    """A store with battles attached (as an import has them: no live channels)."""
    store = await Store.open(tmp_path / "kb.sqlite3")
    service = await Battles.start(store, static)
    try:
        yield store, service
    finally:
        await service.stop()
        await store.close()


@asynccontextmanager
async def failing_store(tmp_path: Path, static: StaticData) -> AsyncIterator[tuple[Store, FailingWriter]]:
    """A store with battles attached and a FailingWriter after them (failing until told not to)."""
    store = await Store.open(tmp_path / "kb.sqlite3")
    service = await Battles.start(store, static)
    fails = FailingWriter()
    store.writers.append(fails)
    try:
        yield store, fails
    finally:
        await service.stop()
        await store.close()


async def test_a_rolled_back_batch_is_forgotten(tmp_path: Path, static: StaticData) -> None:
    kills = new_kills(sorted(fight("30001155"), key=lambda k: k["killmail_time"])[:30], static)
    async with failing_store(tmp_path, static) as (store, fails):
        with pytest.raises(OSError):
            await store.save_kills(kills[:10])  # the battles writer ran, then the transaction rolled back
        assert await store.query("SELECT count(*) FROM battles") == [(0,)]
        fails.failing = False
        await store.save_kills(kills[:10])
        await store.save_kills(kills[10:])
        rows = await store.query("SELECT battle_id, kill_count FROM battles WHERE merged_into IS NULL")
        assert rows == [(1, 30)]
        assert await store.query("SELECT count(*), count(DISTINCT seq) FROM battle_kills") == [(30, 30)]
        assert await store.query(
            "SELECT count(*) FROM battle_kills b LEFT JOIN kills k USING (seq) WHERE k.seq IS NULL"
        ) == [(0,)]


async def test_a_rolled_back_batch_of_loose_kills_is_forgotten(tmp_path: Path, static: StaticData) -> None:
    kills = new_kills(sorted(fight("30001155"), key=lambda k: k["killmail_time"])[:8], static)
    async with failing_store(tmp_path, static) as (store, fails):
        with pytest.raises(OSError):
            await store.save_kills(kills[:4])  # four kills: no battle yet, only remembered
        fails.failing = False
        await store.save_kills(kills[:4])  # the same seqs again
        await store.save_kills(kills[4:])
        assert await store.query("SELECT battle_id, kill_count FROM battles") == [(1, 8)]


async def test_a_rolled_back_batch_leaves_no_battle_news_behind(
    tmp_path: Path, static: StaticData, killmails: list[dict[str, Any]]
) -> None:
    """The battles' writer runs in the database thread and leaves what the live channels must
    hear for on_stored, after the commit. A batch that rolled back leaves nothing there: the next
    kills to take its seqs (two loose ones, no battle) must not come out as kills of its battle."""
    fought = new_kills(sorted(fight("30001155"), key=lambda k: k["killmail_time"])[:10], static)
    store = await Store.open(tmp_path / "kb.sqlite3")
    service = await Battles.start(store, static, Hub(16, 1.0))  # with the live channels
    fails = FailingWriter()
    store.writers.append(fails)
    try:
        with pytest.raises(OSError):
            await store.save_kills(fought)  # the battles' writer put all ten in a battle, then rolled back
        fails.failing = False
        stored = await store.save_kills(new_kills(killmails[:2], static))
        assert [seq for seq, _ in stored] == [1, 2]  # the rolled-back batch's first seqs
        assert service.channels is not None
        for seq, kill in stored:
            service.on_stored(Stored(seq, kill, None, True))
        assert service.channels.dirty == {}
        assert await store.query("SELECT count(*) FROM battles") == [(0,)]
    finally:
        await service.stop()
        await store.close()


async def test_a_batch_of_late_kills_reads_each_place_and_time_once(tmp_path: Path, static: StaticData) -> None:
    """An import of old kills (or a backlog out of time order) brings each system's battles back
    from the database before detection; kills of one system at one time share that read, and
    detection gives the same battles as kills read one by one."""
    fought = sorted(fight("30001155"), key=lambda k: k["killmail_time"])[:12]
    # A kill a week after the fight first: memory's horizon moves past the fight.
    newer = {**fought[-1], "killmail_id": fought[-1]["killmail_id"] + 10**9}
    newer["killmail_time"] = "2021-12-04" + newer["killmail_time"][10:]
    # The fight's kills twice (the second time under fresh ids): 24 late kills, 12 places and times.
    late = fought + [{**km, "killmail_id": km["killmail_id"] + 2 * 10**9} for km in fought]
    times = {km["killmail_time"] for km in fought}
    reads: list[str] = []

    def trace(db: sqlite3.Connection, new: Sequence[tuple[int, NewKill]]) -> None:
        db.set_trace_callback(reads.append)  # before the battles' writer: sees its reads

    async with battles_store(tmp_path, static) as (store, _):
        store.writers.insert(0, trace)
        await store.save_kills(new_kills([newer], static))
        reads.clear()
        await store.save_kills(new_kills(late, static))
        hydrations = [sql for sql in reads if "FROM battles WHERE end_time >=" in sql and "constellation_id" in sql]
        assert len(hydrations) == len(times) < len(late)
        assert await store.query("SELECT count(*), count(DISTINCT seq) FROM battle_kills") == [(24, 24)]
        assert await store.query("SELECT sum(kill_count) FROM battles WHERE merged_into IS NULL") == [(24,)]


def shifted(kms: list[dict[str, Any]], minutes: int, id_offset: int) -> list[dict[str, Any]]:
    """The same kills `minutes` later under fresh ids (killmail_id + id_offset)."""
    out = []
    for km in kms:
        when = datetime.fromisoformat(km["killmail_time"].replace("Z", "+00:00")) + timedelta(minutes=minutes)
        out.append({**km, "killmail_id": km["killmail_id"] + id_offset, "killmail_time": f"{when:%Y-%m-%dT%H:%M:%SZ}"})
    return out


async def test_a_late_batch_that_places_kills_reads_its_place_again_without_undoing_that(
    tmp_path: Path, static: StaticData
) -> None:
    """Each late kill of a batch at a new time reads its system back from the database, where
    what the batch did so far is not written yet: kills it put in a battle must not go back to
    the loose pool, nor a battle it merged away come back (and merge, counted twice, again)."""
    fought = sorted(fight("30001155"), key=lambda k: k["killmail_time"])
    first = fought[:10]  # 35 s of the fight: one battle
    async with battles_store(tmp_path, static) as (store, service):
        # A kill a week later first: every kill after it is late, and is read back from the database.
        await store.save_kills(new_kills(shifted(fought[-1:], 7 * 24 * 60, 10**9), static))
        await store.save_kills(new_kills(fought[:4], static))  # four loose kills
        await store.save_kills(new_kills(fought[4:], static))  # they and the rest: one battle
        loose = {p.seq for pool in service.detector._pool.values() for _, _, p in pool}
        assert loose == {1}  # the week-later kill alone; the four are in the battle only
        assert await store.query("SELECT battle_id, kill_count FROM battles") == [(1, len(fought))]

        # Two battles 45 minutes apart, then a batch between them that joins them into one.
        await store.save_kills(new_kills(shifted(first, 24 * 60, 2 * 10**9), static))
        await store.save_kills(new_kills(shifted(first, 24 * 60 + 45, 3 * 10**9), static))
        await store.save_kills(new_kills(shifted(first, 24 * 60 + 22, 4 * 10**9), static))
        rows = await store.query("SELECT battle_id, merged_into, kill_count FROM battles WHERE battle_id > 1")
        assert rows == [(2, None, 30), (3, 2, 10)]
        assert {b: x.kill_count for b, x in service.detector.battles.items() if b > 1} == {2: 30}
        assert await store.query("SELECT battle_id, count(*) FROM battle_kills GROUP BY battle_id") == [
            (1, len(fought)),
            (2, 30),
        ]


async def test_a_battle_a_batch_grew_is_written_when_a_newer_kill_of_the_batch_moves_memory_past_it(
    tmp_path: Path, static: StaticData
) -> None:
    """Two streams of kills far apart in time in one batch (a fight posted live beside a later
    one): a kill of the later stream moves memory's horizon past the battle the batch's earlier
    kills joined. That battle must still be written as the batch left it, and a later kill of
    its fight in the batch must not read its row back from before the batch (and count one
    kill of the batch, not both)."""
    fought = sorted(fight("30001155"), key=lambda k: k["killmail_time"])
    later = shifted(fought[-1:], 7 * 24 * 60, 10**9)  # a week later
    async with battles_store(tmp_path, static) as (store, _):
        await store.save_kills(new_kills(fought[:10], static))  # one battle
        await store.save_kills(new_kills([fought[10], *later, *fought[11:14]], static))
        rows = await store.query(
            "SELECT b.battle_id, b.kill_count, (SELECT count(*) FROM battle_kills k WHERE k.battle_id = b.battle_id)"
            " FROM battles b WHERE merged_into IS NULL"
        )
        assert rows == [(1, 14, 14)]


async def test_loose_kills_a_batch_detected_before_a_newer_kill_count_for_its_later_kills(
    tmp_path: Path, static: StaticData
) -> None:
    """A batch's first kills of a fight are loose, a kill hours later moves memory past them,
    then the fight's next kills come: read back from the database, the first ones make the
    battle with them, as they would have in a batch of their own."""
    fought = sorted(fight("30001155"), key=lambda k: k["killmail_time"])[:5]  # within one SEGMENT
    later = shifted(fought[-1:], 7 * 24 * 60, 10**9)
    async with battles_store(tmp_path, static) as (store, _):
        await store.save_kills(new_kills([*fought[:2], *later, *fought[2:]], static))
        assert await store.query("SELECT battle_id, kill_count FROM battles") == [(1, 5)]
        assert await store.query("SELECT count(*) FROM battle_kills") == [(5,)]
