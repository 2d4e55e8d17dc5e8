"""permessage-deflate, negotiated by killboard/live/wire.py, with real clients (aiohttp, python-websockets,
Node's ws, a raw socket) against the real app: every deflate client decodes exactly the JSON a
plain client gets, and each kill is deflated once for all of them."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import rawws
import websockets
from conftest import Client, settle
from test_ws import post, subscribe

from killboard.config import PROJECT_ROOT
from killboard.kill.enrich import enrich
from killboard.kill.frames import encode, kill_frame
from killboard.kill.langs import covering
from killboard.kill.prices import price_book
from killboard.kill.staticdata import LANGUAGES, StaticData
from killboard.kill.validate import parse_submission
from killboard.live import wire
from killboard.web.keys import hub_key

NODE_DIR = Path(__file__).parent.parent / "node"
SUB = {"action": "sub", "channel": "kills"}


def test_negotiate_answers_no_context_takeover_and_honours_window() -> None:
    assert wire.negotiate(None) == (0, None)
    assert wire.negotiate("x-webkit-deflate-frame") == (0, None)
    # Firefox's bare offer and Chrome's: no context takeover answered though not offered.
    assert wire.negotiate("permessage-deflate") == (
        15,
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
    )
    assert wire.negotiate("permessage-deflate; client_max_window_bits")[0] == 15
    assert wire.negotiate("permessage-deflate; server_max_window_bits=9") == (
        9,
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9",
    )
    # Unknown or repeated parameters, a bad window: that offer is declined, the next one taken.
    assert wire.negotiate("permessage-deflate; server_max_window_bits=8") == (0, None)
    assert wire.negotiate("permessage-deflate; mystery=1") == (0, None)
    assert wire.negotiate("permessage-deflate; server_no_context_takeover; server_no_context_takeover") == (0, None)
    assert wire.negotiate("permessage-deflate; server_max_window_bits=20, permessage-deflate")[0] == 15
    # Digits int() takes but the RFC's 1*DIGIT does not, and numbers past int()'s 4,300 digits.
    for value in ("²", "١٠", "1_0", "+9", "9" * 5000):
        assert wire.negotiate(f"permessage-deflate; server_max_window_bits={value}") == (0, None), value
        assert wire.negotiate(f"permessage-deflate; client_max_window_bits={value}") == (0, None), value


def test_deflate_once_inflates_with_the_window_asked_for(killmails: list[dict[str, Any]]) -> None:
    message = json.dumps(killmails[-1]).encode() * 3
    for level in range(1, 10):  # every level a config may set, whichever library makes it
        for bits in wire.WINDOWS:
            payload = wire.deflate(message, level, bits)
            assert not payload.endswith(b"\x00\x00\xff\xff")
            # A client that keeps context inflates each message with the same decompressor.
            inflater = zlib.decompressobj(-bits)
            for _ in range(2):
                assert inflater.decompress(payload + b"\x00\x00\xff\xff") == message


def kill_frames(static: StaticData, killmails: list[dict[str, Any]]) -> list[bytes]:
    """The real kills' frames as the hub deflates them: every language, and English only."""
    prices = price_book(static)
    bodies = [encode(enrich(parse_submission(km), static, {}, prices)) for km in killmails]
    return [kill_frame(1, body) for body in bodies] + [kill_frame(1, wire.body_in(bodies[0], ("en",)))]


def far_repeats() -> bytes:
    """Random bytes repeated just past each window (512 B, 4 KiB, 32 KiB): a compressor that
    ignores the window it was given matches them, and a client with that window cannot copy."""
    rng = random.Random(7)
    block = rng.randbytes(300)
    filler = rng.randbytes(40_000)
    return block + filler[:300] + block + filler[300:4_200] + block + filler[4_200:37_000] + block + block


def test_frames_keep_inside_the_window_at_every_level(static: StaticData, killmails: list[dict[str, Any]]) -> None:
    """A frame made for server_max_window_bits=N never reaches further back than 2**N bytes,
    at every level (levels 1-3 and 9-bit windows go to isal, the rest to zlib-ng, where they are
    installed): inflated one byte at a time, as a client with that window must."""
    messages = [far_repeats(), *kill_frames(static, killmails[-3:])]
    # The check itself catches a frame made with too large a window.
    with pytest.raises(zlib.error, match="too far back"):
        rawws.inflate_strictly(wire.deflate(messages[0], 6, 15), 9)
    for level in range(1, 10):
        for bits in (9, 12):
            for message in messages:
                assert rawws.inflate_strictly(wire.deflate(message, level, bits), bits) == message


def test_burst_and_live_levels_take_the_faster_libraries(static: StaticData, killmails: list[dict[str, Any]]) -> None:
    """isal for the burst's level 1 and for 9-bit windows, zlib-ng for the live feed's 6: each
    no larger than stdlib zlib's where that was measured (bench/compress.py)."""
    isal_zlib = pytest.importorskip("isal.isal_zlib")
    zlib_ng = pytest.importorskip("zlib_ng.zlib_ng")
    assert type(wire._compressor(1, 15)) is type(isal_zlib.compressobj(1, isal_zlib.DEFLATED, -15))
    assert type(wire._compressor(6, 9)) is type(isal_zlib.compressobj(3, isal_zlib.DEFLATED, -9))
    assert type(wire._compressor(6, 15)) is type(zlib_ng.compressobj(6, zlib_ng.DEFLATED, -15))

    def stdlib(message: bytes, level: int, bits: int) -> bytes:
        c = zlib.compressobj(level, zlib.DEFLATED, -bits)
        return (c.compress(message) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]

    frames = kill_frames(static, killmails)
    for level, bits, most in ((1, 15, 1.0), (6, 9, 0.95), (6, 15, 1.05)):
        ours = sum(len(wire.deflate(f, level, bits)) for f in frames)
        assert ours <= most * sum(len(stdlib(f, level, bits)) for f in frames), (level, bits)


def test_without_the_faster_libraries_stdlib_zlib_makes_the_same_frames(killmails: list[dict[str, Any]]) -> None:
    """zlib-ng and isal are optional: missing, stdlib zlib deflates every frame, byte for byte
    what it made before them."""
    code = """if True:
        import json, sys, zlib
        sys.modules["zlib_ng"] = None  # import fails as if not installed
        sys.modules["isal"] = None
        from killboard.live import wire
        assert wire._zlib is zlib and wire._isal is None
        message = sys.stdin.buffer.read()
        for level in (1, 6):
            for bits in wire.WINDOWS:
                c = zlib.compressobj(level, zlib.DEFLATED, -bits)
                want = (c.compress(message) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]
                assert wire.deflate(message, level, bits) == want, (level, bits)
        print("stdlib")
    """
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(killmails[-1]).encode(),
        cwd=PROJECT_ROOT,
        capture_output=True,
        check=True,
        timeout=60,
    )
    assert out.stdout == b"stdlib\n"


async def collect(ws: aiohttp.ClientWebSocketResponse, count: int) -> list[dict[str, Any]]:
    kills = []
    while len(kills) < count:
        msg = await ws.receive(timeout=20)
        assert msg.type is aiohttp.WSMsgType.TEXT, msg
        message = json.loads(msg.data)
        if message["action"] == "kill":
            kills.append(message)
    return kills


async def test_aiohttp_deflate_client_gets_what_a_plain_client_gets(
    client: Client, killmails: list[dict[str, Any]]
) -> None:
    plain = await client.ws_connect("/ws", compress=0)
    deflate = await client.ws_connect("/ws", compress=15)  # offers permessage-deflate
    assert plain.compress == 0
    assert deflate.compress == 15 and deflate.client_notakeover is True  # we asked for it
    assert "server_no_context_takeover" in deflate._response.headers["Sec-WebSocket-Extensions"]
    for ws in (plain, deflate):
        await subscribe(ws)  # aiohttp's client deflates its sub: the server inflates it
    await post(client, killmails)
    want = await collect(plain, len(killmails))
    assert await collect(deflate, len(killmails)) == want
    assert {m["data"]["killmail_id"] for m in want} == {km["killmail_id"] for km in killmails}
    # Acks and pongs still come (plain frames mixed in on the deflate socket).
    await deflate.send_str(json.dumps({"action": "ping"}))
    assert (await deflate.receive_json(timeout=5))["action"] == "pong"


async def test_raw_frames_are_deflated_once_with_rsv1(client: Client, killmails: list[dict[str, Any]]) -> None:
    """On the wire: kill frames carry RSV1, inflate with the window the client asked for (9
    bits: a larger window fails as 'invalid distance too far back' when inflated one byte at a
    time, as a 9-bit client must), acks are plain."""
    host, port = client.server.host, client.server.port
    small, small_w = await rawws.connect(host, port, extensions="permessage-deflate; server_max_window_bits=9")
    full, full_w = await rawws.connect(host, port, extensions="permessage-deflate; client_max_window_bits")
    bare, bare_w = await rawws.connect(host, port)
    assert (
        small_w.extensions
        == "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9"
    )
    assert full_w.extensions == "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    assert bare_w.extensions is None
    for w in (small_w, full_w, bare_w):
        await rawws.send_text(w, json.dumps(SUB))
    plain_kills: dict[int, bytes] = {}
    sizes: dict[int, int] = {}
    for reader in (small, full, bare):
        rsv, opcode, ack = await rawws.read_frame_rsv(reader)
        assert (rsv, opcode, json.loads(ack)["action"]) == (0, 1, "subscribed")
    await post(client, killmails[:20])
    for reader, bits in ((bare, 0), (small, 9), (full, 15)):
        inflater = zlib.decompressobj(-bits) if bits else None
        for _ in range(20):
            rsv, opcode, payload = await asyncio.wait_for(rawws.read_frame_rsv(reader), 10)
            assert opcode == 1
            if inflater is None:
                assert rsv == 0
                text = payload
                plain_kills[json.loads(text)["seq"]] = text
            else:
                assert rsv == 0x40
                sizes[bits] = sizes.get(bits, 0) + len(payload)
                text = inflater.decompress(payload + b"\x00\x00\xff\xff")
                assert text == plain_kills[json.loads(text)["seq"]]
                assert rawws.inflate_strictly(payload, bits) == text
    # A 512-byte window finds fewer repeats than 32 KiB: smaller still, not by as much.
    plain_total = sum(map(len, plain_kills.values()))
    assert sizes[15] * 3 < plain_total and sizes[9] * 1.2 < plain_total and sizes[15] < sizes[9]
    for w in (small_w, full_w, bare_w):
        w.close()


async def test_python_websockets_client(client: Client, killmails: list[dict[str, Any]]) -> None:
    plain = await client.ws_connect("/ws", compress=0)
    await subscribe(plain)
    url = str(client.make_url("/ws")).replace("http://", "ws://")
    async with websockets.connect(url) as ws:  # offers permessage-deflate by default
        assert "server_no_context_takeover" in ws.response.headers["Sec-WebSocket-Extensions"]
        assert any(type(e).__name__ == "PerMessageDeflate" for e in ws.protocol.extensions)
        await ws.send(json.dumps(SUB))
        assert json.loads(await ws.recv())["action"] == "subscribed"
        await post(client, killmails)
        want = await collect(plain, len(killmails))
        got = []
        while len(got) < len(killmails):
            message = json.loads(await asyncio.wait_for(ws.recv(), 20))
            if message["action"] == "kill":
                got.append(message)
        assert got == want


@pytest.mark.skipif(shutil.which("node") is None, reason="node is missing")
async def test_node_ws_client(client: Client, killmails: list[dict[str, Any]]) -> None:
    if not (NODE_DIR / "node_modules" / "ws").exists():
        pytest.skip("Node's ws is not installed: npm ci --prefix tests/node (.ci/run does)")
    plain = await client.ws_connect("/ws", compress=0)
    await subscribe(plain)
    url = str(client.make_url("/ws")).replace("http://", "ws://")
    proc = await asyncio.create_subprocess_exec(
        "node", str(NODE_DIR / "client.js"), url, str(len(killmails)), stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    head = json.loads(await asyncio.wait_for(proc.stdout.readline(), 20))
    assert head["extensions"] == "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    assert json.loads(await asyncio.wait_for(proc.stdout.readline(), 20)) == {"ready": True, "binary": False}
    await post(client, killmails)
    want = await collect(plain, len(killmails))
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0
    assert [json.loads(line) for line in out.splitlines()] == want


async def test_replay_acks_and_live_kills_mix_on_a_deflate_socket(
    client: Client, killmails: list[dict[str, Any]]
) -> None:
    """Replayed kills (deflated on their own), plain acks and replay frames, then live kills
    (deflated once for all): the client decodes every frame, no gap, no duplicate."""
    await post(client, killmails[:40])
    await settle(client)
    for ws_args in ({"compress": 15}, {"compress": 0}):
        ws = await client.ws_connect("/ws", **ws_args)
        await ws.send_str(json.dumps({"action": "sub", "channel": "kills", "since": 0}))
        await ws.send_str(json.dumps({"action": "ping"}))
        seqs: list[int] = []
        actions = []
        posted = False
        while len(seqs) < len(killmails) or "pong" not in actions:
            message = await ws.receive_json(timeout=20)
            actions.append(message["action"])
            if message["action"] == "kill":
                seqs.append(message["seq"])
                if not posted:  # live kills while the replay runs (for the second socket: duplicates)
                    posted = True
                    await post(client, killmails[40:])
        assert seqs == sorted(set(seqs))
        assert {"subscribed", "replay", "pong"} <= set(actions)
        await ws.close()


async def test_lang_cuts_names_and_keeps_the_shape(client: Client, killmails: list[dict[str, Any]]) -> None:
    full = await client.ws_connect("/ws", compress=0)
    en = await client.ws_connect("/ws?lang=en", compress=15)
    de_ru = await client.ws_connect("/ws?lang=ru,de", compress=0)
    for ws in (full, en, de_ru):
        await subscribe(ws)
    await post(client, killmails)
    want = await collect(full, len(killmails))
    got_en = await collect(en, len(killmails))
    got_de = await collect(de_ru, len(killmails))
    for whole, one, two in zip(want, got_en, got_de, strict=True):
        _same_but_names(whole, one, ("en",))
        # Two languages besides English: served the variant with every language (langs.covering).
        _same_but_names(whole, two, covering(("de", "ru")) or LANGUAGES)
    assert len(json.dumps(got_en)) < len(json.dumps(want)) / 2


def _same_but_names(whole: Any, cut: Any, langs: tuple[str, ...]) -> None:
    """`cut` is `whole` with each translation object holding only `langs` (English if none)."""
    if isinstance(whole, dict) and "en" in whole and set(whole) <= {"en", "de", "es", "fr", "ja", "ko", "ru", "zh"}:
        kept = {k: v for k, v in whole.items() if k in langs} or {"en": whole["en"]}
        assert cut == kept
    elif isinstance(whole, dict):
        assert list(cut) == list(whole)
        for key in whole:
            _same_but_names(whole[key], cut[key], langs)
    elif isinstance(whole, list):
        assert len(cut) == len(whole)
        for a, b in zip(whole, cut, strict=True):
            _same_but_names(a, b, langs)
    else:
        assert cut == whole


async def test_bad_lang_is_a_400_with_a_json_body(client: Client) -> None:
    for query in ("lang=xx", "lang=", "lang=en,klingon"):
        resp = await client.get(f"/ws?{query}", headers={"Upgrade": "websocket", "Connection": "Upgrade"})
        assert resp.status == 400
        assert "lang" in (await resp.json())["error"]


async def test_each_variant_is_deflated_once_per_kill(client: Client, killmails: list[dict[str, Any]]) -> None:
    calls: list[tuple[int, int]] = []
    real = wire.deflate

    def counting(message: bytes, level: int, wbits: int = 15) -> wire.Deflated:
        calls.append((len(message), wbits))
        return real(message, level, wbits)

    wire.deflate = counting  # type: ignore[assignment]
    try:
        sockets = [await client.ws_connect("/ws", compress=15) for _ in range(5)]
        sockets += [await client.ws_connect("/ws?lang=en", compress=15) for _ in range(3)]
        for ws in sockets:
            await subscribe(ws)
        await post(client, killmails[:10])
        for ws in sockets:
            await collect(ws, 10)
    finally:
        wire.deflate = real  # type: ignore[assignment]
    assert len(calls) == 20  # 10 kills x 2 variants (all languages, English), not x 8 sockets
    assert client.server.app[hub_key].deliveries == 80


async def test_deflate_off_sends_plain(make_client: Any, killmails: list[dict[str, Any]]) -> None:
    client = await make_client(ws_deflate=False)
    ws = await client.ws_connect("/ws", compress=15)
    assert ws.compress == 0
    await subscribe(ws)
    await post(client, killmails[:3])
    assert len(await collect(ws, 3)) == 3


def test_a_variant_is_the_same_from_the_body_or_the_enriched_object(killmails: list[dict[str, Any]]) -> None:
    """The writer hands publish the enriched object; an edge process has only the body bytes."""
    from killboard.kill.codec import default_renderer
    from killboard.kill.enrich import enrich
    from killboard.kill.prices import price_book
    from killboard.kill.staticdata import load_static
    from killboard.kill.validate import parse_submission

    static = load_static(Path(__file__).parents[2] / "data")
    for i, km in enumerate(killmails[:20]):
        kill = enrich(parse_submission(km), static, {}, price_book(static))
        body = wire.encode(kill)
        assert body == default_renderer()(parse_submission(km), {}, None)
        for langs in (("en",), ("de", "ru")):
            from_object = wire.KillVariants(i, body, 6, decoded=lambda kill=kill: kill)
            from_body = wire.KillVariants(i, body, 6)
            assert from_object.frame(langs) == from_body.frame(langs)
            assert from_object.deflated(langs, 15) == from_body.deflated(langs, 15)
        assert kill == json.loads(body)  # cutting names never changed the object itself


async def test_compressed_client_frames_are_inflated_and_bounded(client: Client) -> None:
    """What a deflate client sends is inflated one message at a time (client_no_context_takeover)
    and held to the same 4 KiB limit after inflating; garbage closes the socket, nothing else."""
    host, port = client.server.host, client.server.port
    reader, writer = await rawws.connect(host, port, extensions="permessage-deflate")
    for _ in range(3):  # each message a stream of its own: no state carried over
        writer.write(rawws.masked_deflated_frame(json.dumps({"action": "ping"}).encode()))
        _, _, pong = await asyncio.wait_for(rawws.read_frame_rsv(reader), 5)
        assert json.loads(pong)["action"] == "pong"
    bomb = json.dumps({"action": "ping", "pad": "x" * 100_000}).encode()  # ~300 bytes deflated
    writer.write(rawws.masked_deflated_frame(bomb))
    _, opcode, close = await asyncio.wait_for(rawws.read_frame_rsv(reader), 5)
    assert opcode == 0x8 and int.from_bytes(close[:2], "big") == 1009
    writer.close()

    reader, writer = await rawws.connect(host, port, extensions="permessage-deflate")
    frame = rawws.masked_frame(b"\xff\xfe not deflate at all")
    writer.write(bytes([frame[0] | 0x40]) + frame[1:])
    _, opcode, _ = await asyncio.wait_for(rawws.read_frame_rsv(reader), 5)
    assert opcode == 0x8  # closed (aiohttp's reader gives up on the stream), the server goes on
    writer.close()
    resp = await client.get("/health")
    assert resp.status == 200


async def test_replays_send_each_socket_its_own_variant(client: Client, killmails: list[dict[str, Any]]) -> None:
    """Replays share one cache of plain frames; a lang/deflate socket gets its variant of each,
    made once for all such sockets."""
    await post(client, killmails[:30])
    await settle(client)
    sockets = [
        await client.ws_connect("/ws", compress=0),
        await client.ws_connect("/ws?lang=en", compress=15),
        await client.ws_connect("/ws?lang=en", compress=15),
    ]
    for ws in sockets:
        await ws.send_str(json.dumps({"action": "sub", "channel": "kills", "since": 0}))
    got = [await collect(ws, 30) for ws in sockets]
    assert got[1] == got[2]
    for full, cut in zip(got[0], got[1], strict=True):
        _same_but_names(full, cut, ("en",))


async def test_an_offer_with_a_number_int_refuses_is_declined_not_a_500(client: Client) -> None:
    """A "²" or 5,000 digits as a window made the handshake a 500; the offer is declined now,
    and the socket works without deflate."""
    host, port = client.server.host, client.server.port
    for value in ("\u00b2", "9" * 5000):
        offer = f"permessage-deflate; server_max_window_bits={value}"
        reader, writer = await rawws.connect(host, port, extensions=offer)  # sent as UTF-8
        assert writer.extensions is None  # type: ignore[attr-defined]
        writer.write(rawws.masked_frame(json.dumps({"action": "ping"}).encode()))
        _, opcode, pong = await asyncio.wait_for(rawws.read_frame_rsv(reader), 5)
        assert opcode == 0x1 and json.loads(pong)["action"] == "pong"
        writer.close()


async def test_the_4_kib_limit_is_exact_on_a_deflate_socket_too(client: Client) -> None:
    """Deflate sockets read with aiohttp's pure-Python reader: the same limit, to the byte."""
    host, port = client.server.host, client.server.port
    for size, compressed in ((4096, False), (4096, True), (4097, False), (4097, True)):
        reader, writer = await rawws.connect(host, port, extensions="permessage-deflate")
        ping = json.dumps({"action": "ping", "pad": ""}).encode()
        message = ping[:-2] + b"x" * (size - len(ping)) + b'"}'
        assert len(message) == size
        writer.write(rawws.masked_deflated_frame(message) if compressed else rawws.masked_frame(message))
        _, opcode, payload = await asyncio.wait_for(rawws.read_frame_rsv(reader), 5)
        if size <= 4096:
            assert json.loads(payload)["action"] == "pong", (size, compressed)
        else:
            assert opcode == 0x8 and int.from_bytes(payload[:2], "big") == 1009, (size, compressed)
        writer.close()
