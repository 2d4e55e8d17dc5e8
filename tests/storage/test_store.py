"""The compact stored form: what a read renders equals what was broadcast, its size, old rows."""

from __future__ import annotations

import json
import sqlite3
import threading
import zlib
from pathlib import Path
from typing import Any

from conftest import AUTH, Client, settle
from killgen import make_kills, save_all

from killboard.entities import backlog
from killboard.ingest.pipeline import build_kill
from killboard.kill import codec
from killboard.kill.enrich import enrich
from killboard.kill.frames import encode
from killboard.kill.prices import price_book
from killboard.kill.staticdata import StaticData
from killboard.kill.validate import parse_submission
from killboard.storage.schema import MIGRATIONS
from killboard.storage.sqlite import SHAPES, insert_many
from killboard.storage.store import COUNTS, Store
from killboard.web.keys import pipeline_key, prices_key, store_key


def on_disk(db: Path) -> int:
    """Database plus WAL, the figure docs/storage.md reports."""
    return sum(p.stat().st_size for p in (db, Path(f"{db}-wal")) if p.exists())


async def test_read_renders_what_was_broadcast_with_names(make_client: Any, killmails: list[dict[str, Any]]) -> None:
    client: Client = await make_client()

    async def resolve(ids: set[int]) -> dict[int, str]:
        return {i: f"Pilot {i}" for i in ids}

    client.server.app[pipeline_key].resolve_names = resolve
    ws = await client.ws_connect("/ws")
    await ws.send_json({"action": "sub", "channel": "kills"})
    assert (await ws.receive_json())["action"] == "subscribed"
    sent = killmails[:5]
    resp = await client.post("/api/killmails", data=json.dumps(sent), headers=AUTH)
    assert resp.status == 202
    broadcast = {}
    for _ in sent:
        frame = await ws.receive_json(timeout=5)
        broadcast[frame["data"]["killmail_id"]] = frame["data"]
    await ws.close()
    await settle(client)
    for km in sent:
        resp = await client.get(f"/api/killmails/{km['killmail_id']}")
        assert await resp.json() == broadcast[km["killmail_id"]]
    victim = broadcast[sent[0]["killmail_id"]]["victim"]
    assert victim["character_name"] == f"Pilot {victim['character_id']}"

    # Market prices are refreshed daily: a kill read later keeps the values it went out with.
    book = client.server.app[prices_key]
    book.market = {type_id: price * 3 for type_id, price in book.market.items()}
    book.fixed = {type_id: price * 3 for type_id, price in book.fixed.items()}
    for km in sent:
        resp = await client.get(f"/api/killmails/{km['killmail_id']}")
        assert await resp.json() == broadcast[km["killmail_id"]]


async def test_compact_rows_stay_small(tmp_path: Path, static: StaticData, killmails: list[dict[str, Any]]) -> None:
    """3,000 kills (the real ones repeated with new ids) take under 1,500 B each on disk with everything
    kept beside them (issue 20): the participant index and the entity figures (977 B before either)."""
    store = await Store.open(tmp_path / "kb.sqlite3")
    backlog.attach(store, static)  # the entity figures, as the server keeps them
    try:
        await save_all(store, make_kills(static, killmails, 3000, 500_000_000, 1_700_000_000))
        await store.checkpoint()
        assert await store.count() == 3000
    finally:
        await store.close()
    assert on_disk(tmp_path / "kb.sqlite3") / 3000 < 1500
    # The schema-1 form of the same kills would be ~5.5 KB each, before row overhead.
    enriched = [enrich(parse_submission(k), static, {}, price_book(static)) for k in killmails]
    assert sum(len(zlib.compress(encode(k), 6)) for k in enriched) / len(enriched) > 4000


async def test_schema_1_database_is_migrated_and_old_rows_still_read(
    tmp_path: Path, static: StaticData, killmails: list[dict[str, Any]]
) -> None:
    path = tmp_path / "old.sqlite3"
    old_body = encode(enrich(parse_submission(killmails[0]), static, {}, price_book(static)))
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS[0] + "\nPRAGMA user_version = 1;")
    db.execute(
        "INSERT INTO kills (killmail_id, killmail_hash, kill_time, system_id, total_value, stored_at, body)"
        " VALUES (?, ?, 0, 1, 0, 0, ?)",
        (killmails[0]["killmail_id"], killmails[0]["killmail_hash"], zlib.compress(old_body, 6)),
    )
    db.commit()
    assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    db.close()

    store = await Store.open(path, render=codec.renderer(static, price_book(static)))
    try:
        stored = await store.get(killmails[0]["killmail_id"])
        assert stored is not None and stored.body == old_body
        async with store._reader.execute("PRAGMA auto_vacuum") as cur:
            assert (await cur.fetchone())[0] == 2  # switched to incremental by a one-off VACUUM
        async with store._reader.execute("PRAGMA user_version") as cur:
            assert (await cur.fetchone())[0] == len(MIGRATIONS)
    finally:
        await store.close()


async def test_rewrite_replaces_the_stored_source(client: Client, killmails: list[dict[str, Any]]) -> None:
    km = killmails[0]
    await client.post("/api/killmails", data=json.dumps(km), headers=AUTH)
    await settle(client)
    store = client.server.app[store_key]
    esi = {k: v for k, v in km.items() if k != "killmail_hash"}
    esi["victim"] = {**esi["victim"], "damage_taken": 12345}
    assert await store.rewrite(km["killmail_id"], esi, None)
    assert not await store.rewrite(1, esi, None)
    resp = await client.get(f"/api/killmails/{km['killmail_id']}")
    assert (await resp.json())["victim"]["damage_taken"] == 12345


async def test_nameless_kills_are_marked_with_the_kills_themselves(
    tmp_path: Path, static: StaticData, killmails: list[dict[str, Any]]
) -> None:
    """Marked in the same transaction as the kill, and only when the kill is new."""
    store = await Store.open(tmp_path / "kb.sqlite3")
    try:
        first, second = make_kills(static, killmails, 2, 700_000_000, 1_700_000_000)
        await store.save_kills([first], names_pending=[first.killmail_id])
        assert [k.killmail_id for k in await store.names_pending()] == [first.killmail_id]
        # A duplicate of a stored kill, and a kill that is not in the batch, are not marked.
        await store.save_kills([first, second], names_pending=[first.killmail_id, 123])
        assert await store.names_pending_count() == 1
    finally:
        await store.close()


async def test_the_kept_count_follows_saves_prunes_and_other_writers(
    tmp_path: Path, static: StaticData, killmails: list[dict[str, Any]]
) -> None:
    """count() is kept, not recounted: it must still agree with count(*) after every change,
    including kills another connection stores (an import beside the server)."""
    store = await Store.open(tmp_path / "kb.sqlite3")
    other = await Store.open(tmp_path / "kb.sqlite3")
    try:

        async def truth() -> int:
            return await store._number("SELECT count(*) FROM kills")

        async def kept() -> int:
            # /health's counts() (which keeps what it counted) must agree with count() throughout.
            counts = await store.counts()
            assert counts.last_seq == await store._number("SELECT max(seq) FROM kills")
            return counts.kills

        assert await kept() == 0 == await store.count()
        await save_all(store, make_kills(static, killmails, 120, first_id=10**10, kill_time=1_000))
        assert await kept() == 120 == await store.count() == await truth()
        await save_all(other, make_kills(static, killmails, 30, first_id=2 * 10**10, kill_time=3_000))
        await save_all(store, make_kills(static, killmails, 10, first_id=3 * 10**10, kill_time=1_000))
        assert await kept() == 160 == await truth()
        await save_all(store, make_kills(static, killmails, 5, first_id=4 * 10**10, kill_time=1_000))
        assert await store.prune(older_than=2_000, batch=100) == 100  # some counted, some not yet
        assert await kept() == 65 == await store.count() == await truth()
        while await store.prune(older_than=2_000, batch=100):
            pass
        assert await kept() == 30 == await truth()
        assert await store.count() == 30 == await truth()
    finally:
        await other.close()
        await store.close()


async def test_counting_the_inbox_reads_an_index_not_the_table(tmp_path: Path) -> None:
    """/health counts the inbox on every call; walking the table itself took 35-80 ms with
    20,000 kills waiting (an import). The plan must use an index."""
    store = await Store.open(tmp_path / "kb.sqlite3")
    try:
        async with store._reader.execute("EXPLAIN QUERY PLAN SELECT count(*) FROM inbox") as cur:
            plan = " ".join(str(row[-1]) for row in await cur.fetchall())
        # /health asks it inside its one statement (Store.counts): the same plan there.
        async with store._reader.execute("EXPLAIN QUERY PLAN " + COUNTS, (0,)) as cur:
            counts_plan = " ".join(str(row[-1]) for row in await cur.fetchall())
    finally:
        await store.close()
    assert "USING COVERING INDEX inbox_live" in plan, plan
    assert "SCAN inbox USING COVERING INDEX inbox_live" in counts_plan, counts_plan


async def test_kills_packed_before_the_write_store_the_same_rows(
    tmp_path: Path, static: StaticData, killmails: list[dict[str, Any]]
) -> None:
    """The pipeline packs a kill's document and pilots before the write (NewKill.packed,
    Participation.packed): the rows are byte for byte those the write makes itself."""
    book = price_book(static)
    rows: list[list[Any]] = []
    for name, early in (("plain", False), ("packed", True)):
        store = await Store.open(tmp_path / f"{name}.sqlite3")
        try:
            subs = [parse_submission(k) for k in killmails]
            pack = store.pack_source if early else None
            kills = [build_kill(sub, enrich(sub, static, {}, book), {}, pack) for sub in subs]
            assert all(
                bool(k.packed) == early and bool(k.participation and k.participation.packed) == early for k in kills
            )
            await store.save_kills(kills)
        finally:
            await store.close()
        db = sqlite3.connect(tmp_path / f"{name}.sqlite3")
        try:
            rows.append(
                db.execute(
                    "SELECT k.seq, k.body, k.codec, p.pilots FROM kills k JOIN participants p USING (seq)"
                ).fetchall()
            )
        finally:
            db.close()
    assert len(rows[0]) == len(killmails)
    assert rows[0] == rows[1]


def test_insert_many_sends_statements_of_a_few_shapes_only(tmp_path: Path) -> None:
    """Every row count from 1 to 700 sent with the same few statement texts: each is prepared
    once and then found in the connection's statement cache (on main, a text for each count)."""
    sql = "INSERT INTO t (a, b) VALUES (?, ?) ON CONFLICT (a) DO UPDATE SET b = b + excluded.b"
    db = sqlite3.connect(tmp_path / "shapes.sqlite3", isolation_level=None)
    try:
        db.execute("CREATE TABLE t (a INTEGER PRIMARY KEY, b INTEGER)")
        rows_a_statement: set[int] = set()  # the trace shows each statement with its values bound
        db.set_trace_callback(lambda text: rows_a_statement.add(text.split(" ON ")[0].count("(") - 1))
        for count in range(1, 701):
            insert_many(db, sql, [(i, 1) for i in range(count)])
        db.set_trace_callback(None)
        assert rows_a_statement <= set(SHAPES)
        assert db.execute("SELECT count(*), min(b), max(b) FROM t").fetchone() == (700, 1, 700)
    finally:
        db.close()


async def test_foreign_version_is_one_hop_to_the_writer_thread(tmp_path: Path) -> None:
    """The poll runs four times a second: one call queued to the thread (on main three: execute,
    fetch, close), each waking that thread and then the loop."""
    store = await Store.open(tmp_path / "kb.sqlite3")
    try:
        hops = [0]
        execute = store._writer._execute

        def counted(fn: Any, *args: Any, **kwargs: Any) -> Any:
            hops[0] += 1
            return execute(fn, *args, **kwargs)

        store._writer._execute = counted  # type: ignore[method-assign]
        first = await store.foreign_version()
        assert hops == [1]
        other = sqlite3.connect(store.path)
        other.execute("INSERT INTO state (key, value) VALUES ('x', 'y')")
        other.commit()
        other.close()
        assert await store.foreign_version() > first and hops == [2]
    finally:
        await store.close()


async def test_insert_many_writes_what_executemany_writes(tmp_path: Path) -> None:
    """Rows sent as statements of many rows (an upsert adding to rows of the same statement and
    of earlier ones, a whole statement of 10,922 rows and a remainder): the table executemany leaves."""
    sql = "INSERT INTO t (a, b, n) VALUES (?, ?, ?) ON CONFLICT (a, b) DO UPDATE SET n = n + excluded.n"
    rows = [(i % 37, i % 11, i) for i in range(12_000)]
    tables = []
    for name in ("many", "insert_many"):
        store = await Store.open(tmp_path / f"{name}.sqlite3")
        try:

            def write(db: sqlite3.Connection, name: str = name) -> None:
                db.execute("CREATE TABLE t (a INTEGER, b INTEGER, n INTEGER, PRIMARY KEY (a, b))")
                for part in (rows[:10], rows[10:], []):
                    if name == "many":
                        db.executemany(sql, part)
                    else:
                        insert_many(db, sql, part)

            await store.transact(write)
            tables.append(await store.query("SELECT a, b, n FROM t ORDER BY a, b"))
        finally:
            await store.close()
    assert len(tables[0]) == 37 * 11
    assert tables[0] == tables[1]


async def test_reads_decode_and_render_off_the_event_loop_in_one_hop_a_page(
    tmp_path: Path, static: StaticData, killmails: list[dict[str, Any]], monkeypatch: Any
) -> None:
    """A page's stored kills are decoded in one thread and rendered in one thread (possibly the
    same pool thread), never on the event loop: a battle page's 244 kills held it ~120 ms."""
    render = codec.renderer(static, price_book(static))
    decoded_in: list[int] = []
    rendered_in: list[int] = []
    decode = codec.decode

    def decode_here(*args: Any) -> Any:
        decoded_in.append(threading.get_ident())
        return decode(*args)

    def render_here(*args: Any) -> bytes:
        rendered_in.append(threading.get_ident())
        return render(*args)

    store = await Store.open(tmp_path / "kb.sqlite3", render=render_here)
    try:
        await save_all(store, make_kills(static, killmails, 40, 500_000_000, 1_700_000_000))
        monkeypatch.setattr(codec, "decode", decode_here)
        loop_thread = threading.get_ident()
        page = await store.latest(40)
        assert len(page) == 40 and len(decoded_in) == 40 and len(rendered_in) == 40
        assert loop_thread not in decoded_in and loop_thread not in rendered_in
        assert len(set(decoded_in)) == 1 and len(set(rendered_in)) == 1  # one hop each for the page
        # The same JSON the renderer gives on the caller's thread, newest first.
        made = {k.killmail_id: k for k in make_kills(static, killmails, 40, 500_000_000, 1_700_000_000)}
        assert [k.killmail_id for k in page] == sorted(made, reverse=True)
        for kill in page:
            source = made[kill.killmail_id]
            sub, frozen = decode(kill.killmail_id, source.killmail_hash, source.source)
            assert kill.body == render(sub, {}, frozen)
    finally:
        await store.close()


async def test_fleet_fights_go_to_render_big_and_come_back_here_without_an_answer(
    tmp_path: Path, static: StaticData, killmails: list[dict[str, Any]], monkeypatch: Any
) -> None:
    """A document over BIG_DOCUMENT goes to `render_big` (the worker process); when it has no
    answer (None: the worker died), the kill is decoded and rendered here, in the page's order."""
    from killboard.storage import rendering

    render = codec.renderer(static, price_book(static))
    store = await Store.open(tmp_path / "kb.sqlite3", render=render)
    asked: list[int] = []

    async def render_big(killmail_id: int, killmail_hash: str, document: bytes, names: Any) -> bytes | None:
        asked.append(killmail_id)
        return b'{"from":"worker"}' if killmail_id % 2 == 0 else None

    try:
        await save_all(store, make_kills(static, killmails, 6, 500_000_000, 1_700_000_000))
        plain = {k.killmail_id: k.body for k in await store.latest(6)}
        monkeypatch.setattr(rendering, "BIG_DOCUMENT", 0)  # every kill a "fleet fight"
        store.render_big = render_big
        page = await store.latest(6)
    finally:
        await store.close()
    assert sorted(asked) == sorted(plain) and [k.killmail_id for k in page] == sorted(plain, reverse=True)
    for kill in page:
        expected = b'{"from":"worker"}' if kill.killmail_id % 2 == 0 else plain[kill.killmail_id]
        assert kill.body == expected


async def test_names_of_many_players_are_read_whole(tmp_path: Path) -> None:
    """A batch asks for the names of thousands of players at once (read in one hop now, in
    statements as big as the connection allows): every stored one comes back, nothing else."""
    store = await Store.open(tmp_path / "kb.sqlite3")
    try:
        stored = {90_000_000 + i: (f"Pilot {i}", "character") for i in range(0, 6_000, 2)}
        await store.save_names(stored)
        asked = range(90_000_000, 90_006_000)  # half of them have a name
        assert await store.names(asked) == {i: name for i, (name, _) in stored.items()}
        assert await store.names([]) == {}
        assert await store.names([1, 2, 90_000_000, 90_000_000]) == {90_000_000: "Pilot 0"}
    finally:
        await store.close()
