"""Webhook delivery through the real app: stored kills to a fake Discord and a fake JSON receiver."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import ujson
from conftest import AUTH, Client, settle, until
from serverproc import free_port
from webhookfakes import WEBHOOK_TOKEN, FakeDiscord, FakeReceiver

from killboard.kill.topics import kill_facts, parse
from killboard.web.keys import store_key, webhooks_key
from killboard.webhooks.deliver import RateLimit, retry_after
from killboard.webhooks.signed import body as signed_body


def renumbered(killmails: list[dict[str, Any]], count: int, first_id: int) -> list[dict[str, Any]]:
    """`count` real kills with new ids (the 82 bundled ones, round and round)."""
    return [{**killmails[n % len(killmails)], "killmail_id": first_id + n} for n in range(count)]


def toml(*hooks: dict[str, Any]) -> str:
    out = []
    for hook in hooks:
        out.append("[[webhook]]")
        out += [f"{key} = {json.dumps(value)}" for key, value in hook.items()]
    return "\n".join(out) + "\n"


@pytest.fixture
async def discord() -> AsyncIterator[FakeDiscord]:
    fake = await FakeDiscord().start()
    yield fake
    await fake.close()


@pytest.fixture
async def receiver() -> AsyncIterator[FakeReceiver]:
    fake = await FakeReceiver(secret="hmac-key").start()
    yield fake
    await fake.close()


Make = Callable[..., Awaitable[Client]]


@pytest.fixture
def with_hooks(make_client: Make, tmp_path: Path) -> Callable[..., Awaitable[Client]]:
    async def make(*hooks: dict[str, Any], **overrides: Any) -> Client:
        path = tmp_path / "webhooks.toml"
        path.write_text(toml(*hooks))
        return await make_client(webhooks_path=path, **overrides)

    return make


async def post(client: Client, kills: list[dict[str, Any]]) -> None:
    for i in range(0, len(kills), 500):
        resp = await client.post("/api/killmails", json=kills[i : i + 500], headers=AUTH)
        assert resp.status == 202, await resp.text()
    await settle(client)


async def stored(client: Client) -> list[tuple[int, dict[str, Any]]]:
    store = client.server.app[store_key]
    rows = await store.after(0, 10_000)
    return [(r.seq, ujson.loads(r.body)) for r in rows]


async def health_of(client: Client, name: str) -> dict[str, Any]:
    resp = await client.get("/health")
    return next(h for h in (await resp.json())["webhooks"] if h["name"] == name)


async def says(client: Client, name: str, **want: Any) -> bool:
    """Does /health show these values for the webhook?"""
    health = await health_of(client, name)
    return all(health[key] == value for key, value in want.items())


async def test_each_webhook_gets_exactly_what_its_channel_selects_in_order(
    with_hooks: Make, discord: FakeDiscord, receiver: FakeReceiver, killmails: list[dict[str, Any]]
) -> None:
    client = await with_hooks(
        {"name": "null", "url": discord.url, "channel": "nullsec", "max_age": 0},
        {"name": "frig", "url": receiver.url, "channel": "frigates", "format": "json", "secret": "hmac-key",
         "max_age": 0},
    )  # fmt: skip
    await post(client, killmails)
    rows = await stored(client)
    want_null = [k["killmail_id"] for _, k in rows if parse("nullsec").matches(kill_facts(k))]
    want_frig = [s for s, k in rows if parse("frigates").matches(kill_facts(k))]
    assert 5 < len(want_null) < len(rows) and 2 < len(want_frig) < len(rows)  # each channel selects a part
    last = rows[-1][0]

    async def done() -> bool:
        hs = [await health_of(client, n) for n in ("null", "frig")]
        return all(h["cursor"] == last for h in hs)

    await until(done, 60)
    assert discord.kill_ids() == want_null
    assert receiver.seqs() == want_frig
    assert receiver.bad_signatures == 0 and not discord.rejected
    # The JSON body is the WebSocket's kill frame, byte for byte what a subscriber gets.
    by_seq = {r.seq: r for r in await client.server.app[store_key].after(0, 1000)}
    first = receiver.frames[0]
    assert first["action"] == "kill" and first["data"]["seq"] == first["seq"]
    assert json.loads(signed_body(first["seq"], by_seq[first["seq"]].body)) == first
    assert receiver.deliveries[0] == f"frig:{first['seq']}"
    # Behind: embeds were packed, never more than 10 to a message.
    assert max(len(m["embeds"]) for m in discord.messages) > 1
    assert all(len(m["embeds"]) <= 10 for m in discord.messages)
    health = await health_of(client, "null")
    assert health["state"] == "idle" and health["delivered"] == len(want_null) and health["behind"] == 0


async def test_a_burst_of_200_kills_respects_the_rate_limit_and_the_size_limits(
    with_hooks: Make, discord: FakeDiscord, killmails: list[dict[str, Any]]
) -> None:
    client = await with_hooks({"name": "all", "url": discord.url, "channel": "kills", "max_age": 0})
    kills = renumbered(killmails, 200, 900_000_000)
    await post(client, kills)
    await until(lambda: _count(discord, 200), 60)
    assert discord.kill_ids() == [k["killmail_id"] for k in kills]
    assert not discord.rejected, discord.rejected  # nothing over Discord's limits
    assert discord.too_early == 0  # every 429 (if any) was waited out
    assert discord.rate_limited == 0  # the headers were read: the bucket was never overrun
    assert len(discord.messages) <= 25  # packed: 200 kills in ~20 messages, not 200


async def test_without_headers_the_429s_retry_after_is_obeyed(
    with_hooks: Make, killmails: list[dict[str, Any]]
) -> None:
    discord = await FakeDiscord(send_headers=False).start()
    try:
        client = await with_hooks({"name": "all", "url": discord.url, "channel": "kills", "max_age": 0})
        kills = renumbered(killmails, 120, 910_000_000)
        await post(client, kills[:60])
        await asyncio.sleep(0.3)
        await post(client, kills[60:])  # new kills keep arriving while it is behind
        await until(lambda: _count(discord, 120), 60)
        assert discord.kill_ids() == [k["killmail_id"] for k in kills]
        assert discord.rate_limited > 0  # it did run into the bucket (no headers to warn it) ...
        assert discord.too_early == 0  # ... and waited out every 429's retry_after
    finally:
        await discord.close()


async def _count(discord: FakeDiscord, n: int) -> bool:
    return len(discord.kill_ids()) >= n


async def test_a_new_webhook_starts_at_the_newest_stored_kill(
    make_client: Make, with_hooks: Make, discord: FakeDiscord, killmails: list[dict[str, Any]]
) -> None:
    first = await make_client()
    await post(first, killmails[:40])
    await first.close()
    client = await with_hooks({"name": "late", "url": discord.url, "channel": "kills", "max_age": 0})
    await until(lambda: says(client, "late", cursor=40))
    await post(client, killmails[40:45])
    await until(lambda: _count(discord, 5))
    await asyncio.sleep(0.3)
    assert discord.kill_ids() == [k["killmail_id"] for k in killmails[40:45]]  # not the 40 before it


async def test_a_webhook_that_was_down_catches_up_in_order(
    with_hooks: Make, receiver: FakeReceiver, killmails: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    receiver.status = 503
    client = await with_hooks(
        {"name": "json", "url": receiver.url, "channel": "kills", "format": "json", "secret": "hmac-key",
         "max_age": 0, "backoff_min": 0.05, "backoff_max": 0.2},
    )  # fmt: skip
    await post(client, killmails[:30])
    await until(lambda: says(client, "json", state="backing off"))
    await post(client, killmails[30:])
    await asyncio.sleep(0.5)
    assert receiver.frames == []
    health = await health_of(client, "json")
    assert health["cursor"] == 0 and "503" in health["last_error"]
    assert "also-secret" not in health["last_error"] and "/hook" not in health["last_error"]  # echoed, scrubbed
    receiver.status = 200
    await until(lambda: says(client, "json", cursor=82), 30)
    assert receiver.seqs() == list(range(1, 83))  # every kill once, in order
    metrics = await (await client.get("/metrics")).text()
    assert 'killboard_webhook_retries_total{reason="http_5xx",webhook="json"}' in metrics
    assert 'killboard_webhook_kills_total{webhook="json"} 82.0' in metrics
    # One warning when it started failing, not one per retry.
    assert sum("retrying with backoff" in r.getMessage() for r in caplog.records) == 1


async def test_a_deleted_webhook_is_disabled_and_its_url_is_never_shown(
    with_hooks: Make, discord: FakeDiscord, killmails: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="killboard")  # ours only: aiosqlite's threads log every call
    wrong = discord.url.replace(WEBHOOK_TOKEN, "revoked-token-xyz")
    client = await with_hooks(
        {"name": "gone", "url": wrong, "channel": "kills", "max_age": 0},
        {"name": "ok", "url": discord.url, "channel": "kills", "max_age": 0},
    )
    await post(client, killmails[:12])
    await until(lambda: says(client, "gone", state="disabled"))
    await until(lambda: _count(discord, 12))
    requests = discord.requests
    await post(client, killmails[12:14])
    await until(lambda: _count(discord, 14))
    assert discord.requests - requests <= 2  # the disabled one sent nothing more
    health = await health_of(client, "gone")
    assert health["cursor"] == 0 and "404" in health["last_error"]
    disabled = [r for r in caplog.records if "disabled" in r.getMessage()]
    assert len(disabled) == 1
    everything = (  # the fake's own access log shows the path, as Discord's would: only ours count
        "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("killboard"))
        + await (await client.get("/health")).text()
        + await (await client.get("/metrics")).text()
    )
    for secret in (WEBHOOK_TOKEN, "revoked-token-xyz", "/api/webhooks/"):
        assert secret not in everything
    assert "token" not in repr(client.server.app[webhooks_key].deliverers[0].hook)


async def test_network_errors_do_not_print_the_url(
    with_hooks: Make, killmails: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    url = f"http://127.0.0.1:{free_port()}/api/webhooks/1/network-secret-token"  # nothing listens there
    client = await with_hooks(
        {"name": "net", "url": url, "channel": "kills", "max_age": 0, "backoff_min": 0.05, "backoff_max": 0.1}
    )
    await post(client, killmails[:2])
    await until(lambda: says(client, "net", state="backing off"))
    health = await health_of(client, "net")
    assert health["last_error"] and "network-secret-token" not in health["last_error"]
    assert all("network-secret-token" not in r.getMessage() for r in caplog.records)


async def test_max_age_skips_old_kills(with_hooks: Make, discord: FakeDiscord, killmails: list[dict[str, Any]]) -> None:
    client = await with_hooks({"name": "recent", "url": discord.url, "channel": "kills", "max_age": 3600})
    await post(client, killmails[:10])  # years old
    await until(lambda: says(client, "recent", cursor=10))
    assert discord.messages == []


async def test_mention_pings_only_for_big_kills_and_only_what_is_configured(
    with_hooks: Make, discord: FakeDiscord, killmails: list[dict[str, Any]]
) -> None:
    client = await with_hooks(
        {"name": "big", "url": discord.url, "channel": "kills", "max_age": 0, "mention": "<@&4242>",
         "mention_min_value": 1e9},
    )  # fmt: skip
    await post(client, killmails)
    await until(lambda: _count(discord, 82), 60)
    values = {k["killmail_id"]: k["total_value"] for _, k in await stored(client)}
    for message in discord.messages:
        assert message["allowed_mentions"] == {"parse": [], "roles": ["4242"]}
        ids = [int(e["footer"]["text"].split()[1]) for e in message["embeds"]]
        assert (message.get("content") == "<@&4242>") == any(values[i] >= 1e9 for i in ids)
    assert any(m.get("content") for m in discord.messages) and not all(m.get("content") for m in discord.messages)


async def test_a_refused_kill_is_skipped_and_the_others_still_go(
    with_hooks: Make, discord: FakeDiscord, killmails: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    bad = killmails[13]["killmail_id"]
    discord.refuse = {bad}
    client = await with_hooks({"name": "d", "url": discord.url, "channel": "kills", "max_age": 0})
    await post(client, killmails[:30])
    await until(lambda: says(client, "d", cursor=30), 30)
    assert discord.kill_ids() == [k["killmail_id"] for k in killmails[:30] if k["killmail_id"] != bad]
    assert sum("refused" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records) == 1
    metrics = await (await client.get("/metrics")).text()
    assert 'killboard_webhook_failures_total{kind="rejected",webhook="d"} 2.0' in metrics  # its message, then it


def test_retry_after_prefers_the_body_then_the_header() -> None:
    assert retry_after({"Retry-After": "7"}, b'{"retry_after": 0.25, "global": false}') == 0.25
    assert retry_after({"Retry-After": "7"}, b"<html>busy</html>") == 7.0
    assert retry_after({}, b"") == 1.0


def test_the_bucket_waits_only_when_empty() -> None:
    now = [100.0]
    limit = RateLimit(clock=lambda: now[0])
    limit.update({"X-RateLimit-Remaining": "1", "X-RateLimit-Reset-After": "1.5"})
    assert limit.delay() == 0.0
    limit.spend()
    assert limit.delay() == 1.5  # the last request of the bucket is spent: wait for the refill
    limit.block(3.0)
    assert limit.delay() == 3.0
    now[0] += 3.0
    assert limit.delay() == 0.0
