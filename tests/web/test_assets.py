"""The page's static files (killboard/web/assets.py): served from memory as they were at start,
with the right type, an ETag and 304, gzipped when the browser takes it; nothing else is served."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from conftest import Client

from killboard.config import resource_dir
from killboard.web import assets


async def test_each_file_is_served_with_its_type_and_revalidates(client: Client) -> None:
    folder = resource_dir("static")
    for name, kind in (("feed.js", "javascript"), ("killboard.css", "text/css"), ("favicon.svg", "image/svg+xml")):
        resp = await client.get(f"/static/{name}", headers={"Accept-Encoding": "identity"})
        assert resp.status == 200, name
        assert await resp.read() == (folder / name).read_bytes(), name
        assert kind in resp.headers["Content-Type"] and resp.headers["Cache-Control"] == "no-cache"
        etag = resp.headers["ETag"]
        again = await client.get(f"/static/{name}", headers={"If-None-Match": etag})
        assert again.status == 304 and await again.read() == b"", name


async def test_a_script_is_gzipped_once_for_browsers_that_take_it(client: Client) -> None:
    resp = await client.get("/static/feed.js", headers={"Accept-Encoding": "gzip, deflate, br"}, auto_decompress=False)
    assert resp.headers["Content-Encoding"] == "gzip" and resp.headers["Vary"] == "Accept-Encoding"
    raw = await resp.read()
    assert gzip.decompress(raw) == (resource_dir("static") / "feed.js").read_bytes()
    assert len(raw) < len(gzip.decompress(raw)) / 2


async def test_unknown_names_and_paths_out_of_the_folder_are_404(client: Client) -> None:
    for path in ("/static/nope.js", "/static/..%2Fapp.py", "/static/../app.py", "/static/", "/static/.hidden"):
        resp = await client.get(path)
        assert resp.status == 404, path
        assert "app.py" not in await resp.text()


def test_the_folder_is_read_whole_at_start_and_a_stray_big_file_refused(tmp_path: Path) -> None:
    (tmp_path / "a.js").write_text("let a = 1;\n" * 200)
    (tmp_path / ".hidden").write_text("x")
    (tmp_path / "sub").mkdir()
    kept = assets.load(tmp_path)
    assert sorted(kept) == ["a.js"] and kept["a.js"].gzipped is not None
    (tmp_path / "a.js").write_text("changed")  # what was read at start is what is served
    assert kept["a.js"].body.startswith(b"let a = 1;")
    (tmp_path / "huge.js").write_bytes(b" " * (assets.MAX_ASSET + 1))
    with pytest.raises(ValueError, match=r"huge\.js"):
        assets.load(tmp_path)
