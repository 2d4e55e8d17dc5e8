"""POST /api/killmails, the read endpoints and /health, against the real app and database."""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

import pytest
from conftest import AUTH, Client, settle, until

from killboard.config import Config
from killboard.web.keys import store_key


async def post(client: Client, body: Any, headers: dict[str, str] = AUTH) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    resp = await client.post("/api/killmails", data=data, headers=headers)
    assert resp.content_type == "application/json", await resp.text()
    return resp.status, await resp.json()


async def test_post_one_then_read_it_back(client: Client, killmails: list[dict[str, Any]]) -> None:
    km = killmails[0]
    status, body = await post(client, km)
    assert status == 202
    assert body == {"accepted": [km["killmail_id"]], "duplicates": [], "rejected": []}
    await settle(client)
    resp = await client.get(f"/api/killmails/{km['killmail_id']}")
    assert resp.status == 200
    kill = await resp.json()
    assert kill["killmail_id"] == km["killmail_id"]
    assert kill["killmail_hash"] == km["killmail_hash"]
    assert kill["seq"] == 1
    assert kill["attacker_count"] == len(km["attackers"])


async def test_batch_with_bad_items_keeps_the_good_ones(client: Client, killmails: list[dict[str, Any]]) -> None:
    bad = copy.deepcopy(killmails[1])
    bad["victim"]["ship_type_id"] = "Rifter"
    no_attackers = copy.deepcopy(killmails[2])
    no_attackers["attackers"] = []
    status, body = await post(client, [killmails[0], bad, no_attackers, 42])
    assert status == 202
    assert body["accepted"] == [killmails[0]["killmail_id"]]
    assert body["rejected"] == [
        {"index": 1, "errors": ["victim.ship_type_id: must be an integer"]},
        {"index": 2, "errors": ["attackers: required non-empty array"]},
        {"index": 3, "errors": ["killmail: must be an object, got int"]},
    ]


async def test_missing_fields_are_named_by_path(client: Client, killmails: list[dict[str, Any]]) -> None:
    km = copy.deepcopy(killmails[3])
    del km["victim"]["ship_type_id"]
    km["attackers"][0]["final_blow"] = "yes"
    km["killmail_hash"] = "not-a-hash"
    status, body = await post(client, km)
    assert status == 422
    assert body["error"] == "no valid killmail in the request"
    errors = body["rejected"][0]["errors"]
    assert "victim.ship_type_id: required integer" in errors
    assert "attackers[0].final_blow: required boolean" in errors
    assert "killmail_hash: must be 40 lowercase hex digits" in errors


async def test_duplicates_are_reported_and_stored_once(client: Client, killmails: list[dict[str, Any]]) -> None:
    km = killmails[5]
    assert (await post(client, [km, km]))[1]["accepted"] == [km["killmail_id"]]
    await settle(client)
    status, body = await post(client, km)
    assert status == 202
    assert body == {"accepted": [], "duplicates": [km["killmail_id"]], "rejected": []}
    await settle(client)
    health = await (await client.get("/health")).json()
    assert health["kills"] == 1


async def test_zkillboard_forms_are_accepted(client: Client) -> None:
    from conftest import DATA

    r2z2 = json.loads((DATA / "zkillboard" / "r2z2_134265477.json").read_text())
    redisq = json.loads((DATA / "zkillboard" / "redisq_119455394.json").read_text())
    status, body = await post(client, [r2z2, redisq])
    assert status == 202, body
    assert sorted(body["accepted"]) == [119455394, 134265477]
    await settle(client)
    kill = await (await client.get("/api/killmails/119455394")).json()
    # zKillboard's values win over ours when the kill carries them.
    assert kill["total_value"] == redisq["package"]["zkb"]["totalValue"]
    assert kill["dropped_value"] == redisq["package"]["zkb"]["droppedValue"]
    assert kill["is_solo"] is True


async def test_auth(make_client: Any, killmails: list[dict[str, Any]]) -> None:
    client = await make_client()
    status, body = await post(client, killmails[0], headers={})
    assert status == 401 and "Bearer" in body["error"]
    status, body = await post(client, killmails[0], headers={"Authorization": "Bearer wrong"})
    assert status == 401
    disabled = await make_client(ingest_token=None)
    status, body = await post(disabled, killmails[0])
    assert status == 403 and "ingest is disabled" in body["error"]


async def test_malformed_json(client: Client) -> None:
    for raw in (b"{not json", b"", b'{"killmail_id": 1', b"\xff\xfe\x00"):
        status, body = await post(client, raw)
        assert status == 400, raw
        assert body["error"].startswith("body is not valid JSON")
    status, body = await post(client, [])
    assert status == 400 and "empty array" in body["error"]


async def test_oversized_body_is_413_json(make_client: Any, config: Config) -> None:
    client = await make_client(max_body_bytes=1024)
    status, body = await post(client, b"[" + b" " * 4096 + b"]")
    assert status == 413
    assert body["error"] == "request body too large: the limit is 1024 bytes"


async def test_too_many_items(make_client: Any, killmails: list[dict[str, Any]]) -> None:
    client = await make_client(max_batch_items=3)
    status, body = await post(client, killmails[:4])
    assert status == 413 and "too many killmails" in body["error"]


async def test_queue_full_is_503_with_retry_after(make_client: Any, killmails: list[dict[str, Any]]) -> None:
    client = await make_client(queue_size=2, queue_full_wait=0.2)
    resp = await client.post("/api/killmails", data=json.dumps(killmails[:3]), headers=AUTH)
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "5"
    assert "server busy" in (await resp.json())["error"]


async def test_list_newest_first_and_paging(client: Client, killmails: list[dict[str, Any]]) -> None:
    await post(client, killmails[:10])
    await settle(client)
    ids = sorted((k["killmail_id"] for k in killmails[:10]), reverse=True)
    page = await (await client.get("/api/killmails?limit=4")).json()
    assert [k["killmail_id"] for k in page["killmails"]] == ids[:4]
    assert page["next_before"] == ids[3]
    page2 = await (await client.get(f"/api/killmails?limit=4&before={ids[3]}")).json()
    assert [k["killmail_id"] for k in page2["killmails"]] == ids[4:8]
    after = await (await client.get("/api/killmails?after=7")).json()
    assert [k["seq"] for k in after["killmails"]] == [8, 9, 10]
    assert after["next_after"] == 10


async def test_read_errors_are_json(client: Client) -> None:
    resp = await client.get("/api/killmails/123")
    assert resp.status == 404 and (await resp.json()) == {"error": "killmail 123 not found"}
    resp = await client.get("/api/killmails/abc")
    assert resp.status == 400 and "must be an integer" in (await resp.json())["error"]
    resp = await client.get("/api/killmails?limit=0")
    assert resp.status == 400 and (await resp.json())["error"] == "limit: must be an integer from 1 to 500, got '0'"
    resp = await client.get("/api/killmails?before=x")
    assert resp.status == 400
    resp = await client.put("/api/killmails")
    assert resp.status == 405 and "error" in await resp.json()


async def test_health(client: Client, killmails: list[dict[str, Any]]) -> None:
    await post(client, killmails[:3])
    await settle(client)
    health = await (await client.get("/health")).json()
    assert health["status"] == "ok"
    assert health["kills"] == 3 and health["queue"] == 0 and health["inbox"] == 0
    assert health["clients"] == 0


async def test_health_answers_behind_an_open_write_transaction(client: Client, killmails: list[dict[str, Any]]) -> None:
    """/health reads its counts on the reader connection (WAL readers do not wait for the writer)
    and not behind count()'s lock, which a prune holds while it waits for the write connection:
    with a long write transaction open and a prune queued behind it, /health still answers, with
    the committed counts."""
    await post(client, killmails[:3])
    await settle(client)
    store = client.app[store_key]
    before = await (await client.get("/health")).json()
    assert (before["kills"], before["inbox"], before["names_pending"]) == (3, 0, 0)
    async with store.transaction() as db:  # the write connection held, as a fleet fight's write holds it
        await db.execute(
            "INSERT INTO inbox (killmail_id, payload, source, live, received_at) VALUES (1, x'7b7d', 'test', 1, 0)"
        )
        await db.execute("INSERT INTO names_pending (killmail_id, since) VALUES (1, 0)")
        prune = asyncio.create_task(store.prune(older_than=2**40, batch=1))

        async def waiting() -> bool:
            return store._count_lock.locked()  # the prune holds the count's lock, waiting for the writer

        await until(waiting, 5)
        health = await (await asyncio.wait_for(client.get("/health"), 2)).json()
        # Nothing uncommitted shows.
        assert (health["kills"], health["inbox"], health["names_pending"]) == (3, 0, 0)
        assert health["last_seq"] == before["last_seq"]
        assert not prune.done()
    assert await prune == 1
    after = await (await client.get("/health")).json()
    assert (after["kills"], after["inbox"], after["names_pending"]) == (2, 1, 1)
    assert after["last_seq"] == await store.last_seq() and after["kills"] == await store.count()


@pytest.mark.parametrize(
    ("path", "high"),
    [("/api/killmails", 500), ("/api/battles", 50), ("/api/character/90000001/kills", 200), ("/api/search", 50)],
)
@pytest.mark.parametrize("raw", ["abc", "0", "-1", "²", "9" * 5000])
async def test_a_bad_limit_is_worded_alike_everywhere(client: Client, path: str, high: int, raw: str) -> None:
    resp = await client.get(path, params={"limit": raw, "q": "jita"})
    assert resp.status == 400
    assert (await resp.json())["error"] == f"limit: must be an integer from 1 to {high}, got {raw[:40]!r}"
