"""Discord embeds: hostile names stay text and ping nobody; every message stays within Discord's limits."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import ujson
from conftest import AUTH, Client, settle, until
from webhookfakes import FakeDiscord, embed_problems

from killboard.web.keys import store_key
from killboard.webhooks import discord
from killboard.webhooks.config import loads

HOSTILE = [
    "@everyone",
    "@here",
    "<@&123456789012345678>",
    "<@98765>",
    "||spoiler|| **bold** __u__ ~~s~~ `code`",
    "[click me](https://evil.example/steal)",
    "# Heading\n> quote\n- list",
    "\\@everyone",
    "x" * 5000,
]


def pings(text: str) -> bool:
    """Would Discord read a mention here (if it were content)?"""
    return bool(re.search(r"@(everyone|here)|<@[!&]?\d", text))


def unescaped_markdown(text: str) -> list[str]:
    """Markdown characters in `text` not preceded by an escaping backslash."""
    return re.findall(r"(?<!\\)[*_~`|\[\]]", text.replace("\\\\", ""))


@pytest.mark.parametrize("name", HOSTILE)
def test_escape_leaves_no_mention_and_no_markdown(name: str) -> None:
    text = discord.escape(name)
    assert not pings(text)
    assert unescaped_markdown(text) == []
    assert "\n" not in text and len(text) <= 2 * discord.MAX_NAME  # cut, then escaped


def test_pack_stops_at_ten_embeds_and_6000_characters() -> None:
    small = {"title": "t", "description": "d" * 100, "fields": [], "footer": {"text": "f"}}
    message = discord.pack(((i, small, False) for i in range(30)), {"parse": []}, None)
    assert len(message.seqs) == 10 and len(message.body["embeds"]) == 10
    big = {"title": "t", "description": "d" * 2500, "fields": [], "footer": {"text": "f"}}
    message = discord.pack(((i, big, False) for i in range(30)), {"parse": []}, None)
    assert message.seqs == (0, 1) and embed_problems(message.body) == []


def test_fit_cuts_every_text_to_its_limit() -> None:
    embed = discord.fit(
        {
            "title": "t" * 999,
            "description": "d" * 9999,
            "fields": [{"name": "n" * 999, "value": "v" * 9999}] * 40,
            "footer": {"text": "f" * 9999},
        }
    )
    assert len(embed["title"]) == 256 and len(embed["description"]) == 4096 and len(embed["fields"]) == 25
    assert all(len(f["name"]) <= 256 and len(f["value"]) <= 1024 for f in embed["fields"])
    assert len(embed["footer"]["text"]) == 2048


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    server = await FakeDiscord().start()
    yield server
    await server.close()


async def test_hostile_names_in_real_kills_ping_nobody_and_break_nothing(
    make_client: Any, tmp_path: Path, fake: FakeDiscord, killmails: list[dict[str, Any]]
) -> None:
    path = tmp_path / "webhooks.toml"
    path.write_text(f'[[webhook]]\nname = "d"\nurl = "{fake.url}"\nchannel = "kills"\nmax_age = 0\n')
    loads(path.read_text())  # the file itself is fine
    client: Client = await make_client(webhooks_path=path, public_url="https://kills.example.com")
    kills = killmails[: len(HOSTILE)]
    names: dict[int, tuple[str, str]] = {}
    for km, hostile in zip(kills, HOSTILE, strict=True):
        victim = km["victim"]
        for field, category in (("character_id", "character"), ("corporation_id", "corporation"),
                                ("alliance_id", "alliance")):  # fmt: skip
            if victim.get(field):
                names[victim[field]] = (hostile, category)
        for attacker in km["attackers"]:
            if attacker.get("character_id"):
                names[attacker["character_id"]] = (hostile, "character")
    await client.server.app[store_key].save_names(names)
    resp = await client.post("/api/killmails", json=kills, headers=AUTH)
    assert resp.status == 202
    await settle(client)

    async def all_there() -> bool:
        return len(fake.kill_ids()) == len(kills)

    await until(all_there, 30)
    assert not fake.rejected
    for message in fake.messages:
        assert message["allowed_mentions"] == {"parse": []}  # no mention configured: nothing may ping
        assert "content" not in message
        for embed in message["embeds"]:
            texts = [embed["title"], embed["description"], embed["footer"]["text"]]
            texts += [f["name"] + f["value"] for f in embed["fields"]]
            for text in texts:
                assert not pings(text)
                # Links only where we put them: zKillboard and this server.
                for target in re.findall(r"(?<!\\)\]\((\S+?)\)", text):
                    assert target.startswith(("https://zkillboard.com/kill/", "https://kills.example.com/kill/"))
    first = fake.messages[0]["embeds"][0]
    stored = ujson.loads((await client.server.app[store_key].after(0, 1))[0].body)
    assert first["url"] == f"https://kills.example.com/kill/{stored['killmail_id']}"
    assert (
        first["thumbnail"]["url"] == f"https://images.evetech.net/types/{stored['victim']['ship_id']}/render?size=128"
    )
    assert first["timestamp"] == stored["kill_time"]
    assert "spoiler" in ujson.dumps(fake.messages)  # the hostile text is there, as text
