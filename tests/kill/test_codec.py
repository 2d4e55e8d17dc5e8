"""Stored source documents (killboard/kill/codec.py): packed with zlib-ng where it is installed,
read back by stdlib zlib as the code before it read them, and rows that stdlib zlib packed (every
database written before) still read, on the real kills and through the real Store and SQLite."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest
from killgen import make_kills, save_all

from killboard.config import PROJECT_ROOT
from killboard.kill import codec
from killboard.kill.enrich import enrich
from killboard.kill.prices import price_book
from killboard.kill.staticdata import StaticData
from killboard.kill.validate import parse_submission
from killboard.storage.store import Store


def stdlib_pack(document: bytes, dictionary: bytes) -> bytes:
    """How stored documents were packed before zlib-ng: stdlib zlib, level 6."""
    c = zlib.compressobj(6, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY, dictionary)
    return c.compress(document) + c.flush()


def stdlib_unpack(blob: bytes, dictionary: bytes) -> bytes:
    """How the code before zlib-ng read a stored document back (its codec.unpack)."""
    d = zlib.decompressobj(-15, dictionary)
    return d.decompress(blob) + d.flush()


def documents(static: StaticData, killmails: list[dict[str, Any]]) -> list[bytes]:
    prices = price_book(static)
    subs = [parse_submission(km) for km in killmails]
    return [codec.source_document(s.esi or {}, s.zkb, codec.kill_prices(enrich(s, static, {}, prices))) for s in subs]


def test_packed_documents_read_both_ways(static: StaticData, killmails: list[dict[str, Any]]) -> None:
    dictionary = codec.load_dictionary()
    docs = documents(static, killmails)
    for doc in docs:
        blob = codec.pack(doc, dictionary)
        assert stdlib_unpack(blob, dictionary) == doc  # a new blob, read by the older code
        old = stdlib_pack(doc, dictionary)
        assert codec.unpack(old, dictionary) == doc  # an old blob, read now
        assert codec.unpack_row(codec.CODEC_SOURCE_ZDICT, old, dictionary) == doc
    # The dictionary is used: without it the documents do not inflate, and pack ~1.5x larger.
    with pytest.raises(zlib.error):
        zlib.decompressobj(-15).decompress(codec.pack(docs[0], dictionary))
    plain = sum(len(zlib.compress(d, 6)) for d in docs)
    assert sum(len(codec.pack(d, dictionary)) for d in docs) * 1.4 < plain


def test_zlib_ng_packs_fewer_bytes_than_stdlib_zlib(static: StaticData, killmails: list[dict[str, Any]]) -> None:
    """zlib-ng at level 7 (measured by bench/compress.py: 0.72x the CPU of stdlib zlib 6 and
    0.95x the bytes on held-out kills): here, with the dictionary the kills are part of."""
    zlib_ng = pytest.importorskip("zlib_ng.zlib_ng")
    assert codec._deflate is zlib_ng and codec.PACK_LEVEL == 7
    dictionary = codec.load_dictionary()
    docs = documents(static, killmails)
    ours = sum(len(codec.pack(d, dictionary)) for d in docs)
    assert ours < sum(len(stdlib_pack(d, dictionary)) for d in docs)


def test_without_zlib_ng_stdlib_zlib_packs_as_before(static: StaticData, killmails: list[dict[str, Any]]) -> None:
    doc = documents(static, killmails[-1:])[0]
    code = """if True:
        import sys, zlib
        sys.modules["zlib_ng"] = None  # import fails as if not installed
        from killboard.kill import codec
        assert codec._deflate is zlib and codec.PACK_LEVEL == 6
        dictionary = codec.load_dictionary()
        document = sys.stdin.buffer.read()
        c = zlib.compressobj(6, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY, dictionary)
        assert codec.pack(document, dictionary) == c.compress(document) + c.flush()
        print("stdlib")
    """
    out = subprocess.run(
        [sys.executable, "-c", code], input=doc, cwd=PROJECT_ROOT, capture_output=True, check=True, timeout=60
    )
    assert out.stdout == b"stdlib\n"


async def test_a_database_reads_with_stdlib_zlib_and_old_rows_read_the_same(
    tmp_path: Path, static: StaticData, killmails: list[dict[str, Any]]
) -> None:
    """Kills stored now inflate with stdlib zlib and the database's own dictionary (what the
    code before zlib-ng does); rows packed by stdlib zlib render exactly as the new ones."""
    path = tmp_path / "kb.sqlite3"
    kills = make_kills(static, killmails, len(killmails), 900_000_000, 1_700_000_000)
    render = codec.renderer(static, price_book(static))
    store = await Store.open(path, render=render)
    try:
        await save_all(store, kills)
        new = {k.killmail_id: (await store.get(k.killmail_id)) for k in kills}
    finally:
        await store.close()

    db = sqlite3.connect(path)
    [(dictionary,)] = db.execute("SELECT data FROM dictionaries WHERE id = ?", (codec.DICTIONARY_ID,))
    rows = db.execute("SELECT killmail_id, body, codec FROM kills").fetchall()
    sources = {k.killmail_id: k.source for k in kills}
    assert len(rows) == len(kills)
    for killmail_id, blob, codec_id in rows:
        assert codec_id == codec.CODEC_SOURCE_ZDICT
        assert stdlib_unpack(blob, dictionary) == sources[killmail_id]
    # The same database as the code before zlib-ng would have written it.
    db.executemany(
        "UPDATE kills SET body = ? WHERE killmail_id = ?",
        [(stdlib_pack(sources[killmail_id], dictionary), killmail_id) for killmail_id, _, _ in rows],
    )
    db.commit()
    db.close()
    store = await Store.open(path, render=render)
    try:
        for killmail_id, stored in new.items():
            old = await store.get(killmail_id)
            assert stored is not None and old is not None and old.body == stored.body
    finally:
        await store.close()
