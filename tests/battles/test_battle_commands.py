"""`python app.py import` forms battles; `python app.py battles rebuild` recomputes them, keeping ids."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest
from battlefights import fight

from killboard.cli import main
from killboard.storage.battle_tables import REBUILD_NEEDED
from killboard.storage.store import Store


async def battles_in(db: Path) -> list[tuple[int, int, int | None]]:
    store = await Store.open(db)
    try:
        return [(r[0], r[1], r[2]) for r in await store.query("SELECT battle_id, kill_count, merged_into FROM battles")]
    finally:
        await store.close()


def test_import_then_rebuild(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "kb.sqlite3"
    for system in ("30002472", "30001155"):
        (tmp_path / f"{system}.json").write_text(json.dumps(fight(system)))
    assert (
        main(
            [
                "import",
                str(tmp_path / "30002472.json"),
                str(tmp_path / "30001155.json"),
                "--db",
                str(db),
                "--no-upstream",
            ]
        )
        == 0
    )
    before = asyncio.run(battles_in(db))
    assert sorted(count for _, count, _ in before) == [163, 174]
    assert main(["battles", "rebuild", "--db", str(db)]) == 0
    assert "battles rebuilt: 2 battles of 337 kills" in capsys.readouterr().out
    assert asyncio.run(battles_in(db)) == before  # same ids, same kills
    # Importing the same files again changes nothing.
    assert main(["import", str(tmp_path / "30002472.json"), "--db", str(db), "--no-upstream"]) == 0
    assert asyncio.run(battles_in(db)) == before


def test_kills_from_before_battles_wait_for_a_rebuild(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "kb.sqlite3"
    (tmp_path / "fight.json").write_text(json.dumps(fight("30001155")))
    assert main(["import", str(tmp_path / "fight.json"), "--db", str(db), "--no-upstream"]) == 0
    # Back to schema 6, as a database of the previous release.
    conn = sqlite3.connect(db)
    conn.executescript("DROP TABLE battles; DROP TABLE battle_kills; PRAGMA user_version = 6;")
    conn.close()

    async def state() -> tuple[str | None, list[tuple[int, ...]]]:
        store = await Store.open(db)
        try:
            return await store.get_state(REBUILD_NEEDED), await store.query("SELECT count(*) FROM battles")
        finally:
            await store.close()

    assert asyncio.run(state()) == ("1", [(0,)])
    assert main(["battles", "rebuild", "--db", str(db)]) == 0
    assert asyncio.run(state()) == (None, [(1,)])
