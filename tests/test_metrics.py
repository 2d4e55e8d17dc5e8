"""GET /metrics: Prometheus text from the app's own registry, off or token-protected by config."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

from conftest import AUTH, Client, settle, until
from fakes import FakeEsi, FakeR2Z2, player_names, r2z2_object
from prometheus_client.parser import text_string_to_metric_families

from killboard.web.keys import config_key


async def scrape(client: Client, headers: dict[str, str] | None = None) -> dict[str, float]:
    resp = await client.get("/metrics", headers=headers or {})
    assert resp.status == 200
    assert resp.content_type == "text/plain"
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(await resp.text()):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


async def test_metrics_follow_what_happens(make_client: Any, killmails: list[dict[str, Any]]) -> None:
    client: Client = await make_client()
    ws = await client.ws_connect("/ws")
    await ws.send_json({"action": "sub", "channel": "kills"})
    await ws.receive_json()
    bad = copy.deepcopy(killmails[1])
    bad["victim"]["ship_type_id"] = "Rifter"
    only_id = {"killmail_id": 5, "hash": "a" * 40}
    resp = await client.post("/api/killmails", data=json.dumps([killmails[0], bad, only_id]), headers=AUTH)
    assert resp.status == 202
    await client.post("/api/killmails", data=json.dumps(killmails[0]), headers=AUTH)
    await settle(client)
    await ws.receive_json(timeout=5)

    m = await scrape(client)
    assert m["killboard_kills_ingested_total{source=http}"] == 1
    assert m["killboard_kills_duplicate_total{source=http}"] == 1
    assert m["killboard_kills_rejected_total{reason=invalid}"] == 1
    assert m["killboard_kills_rejected_total{reason=no_esi_body}"] == 1
    assert m["killboard_kills_stored_total"] == 1
    assert m["killboard_batch_commit_seconds_count"] >= 1
    assert m["killboard_queue_depth"] == 0
    assert m["killboard_queue_capacity"] == 10_000
    assert m["killboard_websocket_connected"] == 1
    assert m["killboard_websocket_subscribed"] == 1
    assert m["killboard_websocket_deliveries_total"] == 1
    assert m["killboard_websocket_slow_drops_total"] == 0
    assert m["killboard_database_bytes{file=main}"] > 0
    await ws.close()
    assert (await scrape(client))["killboard_websocket_connected"] == 0


async def test_two_apps_do_not_share_counters(make_client: Any, killmails: list[dict[str, Any]]) -> None:
    first: Client = await make_client()
    await first.post("/api/killmails", data=json.dumps(killmails[0]), headers=AUTH)
    await settle(first)
    second: Client = await make_client(db_path=first.server.app[config_key].db_path.with_name("other.sqlite3"))
    assert "killboard_kills_ingested_total{source=http}" not in await scrape(second)


async def test_metrics_can_be_turned_off_or_need_a_token(make_client: Any) -> None:
    off: Client = await make_client(metrics=False)
    assert (await off.get("/metrics")).status == 404
    guarded: Client = await make_client(metrics_token="s3cret")
    resp = await guarded.get("/metrics")
    assert resp.status == 401 and "KILLBOARD_METRICS_TOKEN" in (await resp.json())["error"]
    assert (await guarded.get("/metrics", headers={"Authorization": "Bearer nope"})).status == 401
    assert "killboard_queue_depth" in await scrape(guarded, {"Authorization": "Bearer s3cret"})


async def test_upstream_and_esi_metrics_come_from_the_feed_follower(
    make_client: Any, killmails: list[dict[str, Any]]
) -> None:
    """The real follower against local fakes of R2Z2 and ESI (ESI answering 503 to everything)."""
    feed, esi = FakeR2Z2(), FakeEsi(names=player_names(killmails), fail_status=503)
    feed_url, esi_url = await feed.start(), await esi.start()
    try:
        for i, km in enumerate(killmails[:3]):
            feed.objects[100 + i] = r2z2_object(km, 100 + i, uploaded_at=int(time.time()) - 30)
        feed.current = 100
        client: Client = await make_client(
            upstream=True,
            r2z2_url=feed_url,
            esi_url=esi_url,
            user_agent="killboard-tests/1.0 (ops@example.invalid)",
            r2z2_wait=0.05,
            r2z2_rate=1000.0,
            backoff_min=0.05,
            backoff_max=0.2,
        )

        async def taken() -> bool:
            m = await scrape(client)
            return (
                m.get("killboard_upstream_kills_total", 0) == 3
                and m.get("killboard_esi_errors_total{kind=http_5xx}", 0) > 0
            )

        await until(taken)
        m = await scrape(client)
        assert m["killboard_upstream_sequence"] == 103  # the next one to ask for
        assert 25 <= m["killboard_upstream_lag_seconds"] < 120
        assert m["killboard_kills_ingested_total{source=r2z2}"] == 3
        assert m["killboard_esi_error_limit_remaining"] == 100
    finally:
        await feed.close()
        await esi.close()
