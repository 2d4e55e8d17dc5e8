"""HTTP compression both ways (killboard/web/httpzip.py, the upstream session), and `lang` on the REST API."""

from __future__ import annotations

import gzip
import json
from typing import Any

from conftest import Client, settle
from fakes import ENCODINGS, FakeEsi, player_names
from test_ws import post

from killboard.ingest.esi import EsiClient
from killboard.ingest.upstream import new_session
from killboard.web.httpzip import gzip_body
from killboard.web.keptpages import INLINE_GZIP


async def test_json_and_html_are_gzipped_for_clients_that_accept_it(
    client: Client, killmails: list[dict[str, Any]]
) -> None:
    await post(client, killmails)
    await settle(client)
    for path in ("/api/killmails?limit=50", f"/api/killmails/{killmails[0]['killmail_id']}", "/"):
        plain = await client.get(path, headers={"Accept-Encoding": "identity"})
        raw = await plain.read()
        assert plain.status == 200 and "Content-Encoding" not in plain.headers
        zipped = await client.get(path, headers={"Accept-Encoding": "gzip, deflate, br"}, auto_decompress=False)
        body = await zipped.read()
        assert zipped.headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(body) == raw  # stdlib zlib reads zlib-ng's gzip
        assert len(body) * 3 < len(raw), (path, len(body), len(raw))
    # Small bodies are not worth it.
    resp = await client.get("/api/killmails/1", headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    assert resp.status == 404 and "Content-Encoding" not in resp.headers


async def test_a_kept_page_is_gzipped_once_with_zlib_ng(client: Client, killmails: list[dict[str, Any]]) -> None:
    """A kept page's gzip is zlib-ng's, level 6, with no timestamp (the same bytes every time),
    made on the loop for a small page and in a thread for a big one."""
    from zlib_ng import gzip_ng

    await post(client, killmails)
    await settle(client)
    ship = killmails[0]["victim"]["ship_type_id"]
    sizes = []
    for path in ("/", f"/ship/{ship}"):
        raw = await (await client.get(path, headers={"Accept-Encoding": "identity"})).read()
        zipped = await client.get(path, headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
        assert zipped.headers["Content-Encoding"] == "gzip"
        assert await zipped.read() == gzip_body(raw) == gzip_ng.compress(raw, 6, mtime=0)
        sizes.append(len(raw))
    assert sizes[0] > INLINE_GZIP >= sizes[1]  # both ways taken


def test_aiohttp_deflates_with_zlib_ng_once_the_app_is_made(client: Client) -> None:
    from aiohttp.compression_utils import ZLibBackend
    from zlib_ng import zlib_ng

    assert ZLibBackend._zlib_backend is zlib_ng  # set by create_app (the client fixture made one)


async def test_the_upstream_session_takes_gzipped_answers(killmails: list[dict[str, Any]]) -> None:
    fake = FakeEsi(names=player_names(killmails))
    url = await fake.start()
    try:
        some = sorted(fake.names)[:300]
        async with new_session("killboard tests") as session:
            found = await EsiClient(session, url).names(some)
        assert set(found) == set(some)
        assert fake.server is not None
        assert fake.server.app[ENCODINGS] == [("gzip, deflate", "gzip")]
    finally:
        await fake.close()


async def test_rest_lang_cuts_names(client: Client, killmails: list[dict[str, Any]]) -> None:
    await post(client, killmails)
    await settle(client)
    full = (await (await client.get("/api/killmails?limit=82")).json())["killmails"]
    cut = (await (await client.get("/api/killmails?limit=82&lang=de")).json())["killmails"]
    assert [k["killmail_id"] for k in cut] == [k["killmail_id"] for k in full]
    for whole, one in zip(full, cut, strict=True):
        assert one["victim"]["ship_name"] == (
            {"de": whole["victim"]["ship_name"]["de"]}
            if "de" in whole["victim"]["ship_name"]
            else {"en": whole["victim"]["ship_name"]["en"]}
        )
        assert one["system_name"] == whole["system_name"] and one["total_value"] == whole["total_value"]
    kill_id = killmails[3]["killmail_id"]
    single = await (await client.get(f"/api/killmails/{kill_id}?lang=en,ja")).json()
    assert set(single["region_name"]) <= {"en", "ja"} and "en" in single["region_name"]
    after = await (await client.get("/api/killmails?after=0&limit=5&lang=en")).json()
    assert all(set(k["victim"]["ship_name"]) == {"en"} for k in after["killmails"])
    bad = await client.get("/api/killmails?lang=tlh")
    assert bad.status == 400
    assert "unknown language" in json.loads(await bad.text())["error"]


def test_choose_prefers_gzip_and_honours_q0() -> None:
    from aiohttp.web_response import ContentCoding

    from killboard.web.httpzip import choose

    assert choose("gzip, deflate, br") is ContentCoding.gzip
    assert choose("deflate") is ContentCoding.deflate
    assert choose("br, zstd") is None and choose("") is None
    assert choose("gzip;q=0, deflate;q=0.5") is ContentCoding.deflate
    assert choose("*") is ContentCoding.gzip
