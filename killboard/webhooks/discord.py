"""Discord messages: one embed per kill, names escaped, packed into messages within Discord's limits."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..kill.display import BIG_KILL, en, final_blow, isk, security_text

# Discord's documented limits (https://discord.com/developers/docs/resources/message#embed-object-embed-limits).
MAX_EMBEDS = 10
MAX_EMBED_TOTAL = 6000  # characters across title, description, field names and values, footer, author
MAX_TITLE = 256
MAX_DESCRIPTION = 4096
MAX_FIELDS = 25
MAX_FIELD_NAME = 256
MAX_FIELD_VALUE = 1024
MAX_FOOTER = 2048
MAX_AUTHOR = 256
MAX_CONTENT = 2000
# A name from outside is cut to this (EVE names are at most 37 characters; anything longer is not one).
MAX_NAME = 100

IMAGE_SERVER = "https://images.evetech.net"
ZKILLBOARD = "https://zkillboard.com"
RED, GOLD = 0xB03A2E, 0xD4AF37

# Everything Discord's markdown gives meaning to; a backslash makes each one literal.
_MARKDOWN = re.compile(r"([\\*_~`|>#\-\[\]()<:.])")


def escape(text: object, limit: int = MAX_NAME) -> str:
    """Outside text made inert in Discord: no markdown, no masked links, no mentions, one line.

    `@everyone`, `<@&id>` and friends get a zero-width space after the `@` (Discord then shows
    them as text; embeds never ping, but the escape holds in `content` too); every markdown
    character gets a backslash, so `||spoiler||`, `**bold**` and `[x](url)` show as typed.
    """
    value = "".join(" " if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in str(text or ""))
    value = " ".join(value.split())[:limit]
    return _MARKDOWN.sub(r"\\\1", value).replace("@", "@\u200b")


def _name(entity: Mapping[str, Any], field: str) -> str:
    name = entity.get(f"{field}_name")
    if isinstance(name, Mapping):
        name = en(name)
    if name:
        return escape(name)
    ident = entity.get(f"{field}_id")
    return f"#{ident}" if ident else ""


def _who(entity: Mapping[str, Any]) -> str:
    """Pilot (Corporation) <Alliance>, whichever are known."""
    parts = [_name(entity, "character") or _name(entity, "corporation") or _name(entity, "faction") or "unknown"]
    corp, alliance = _name(entity, "corporation"), _name(entity, "alliance")
    if corp and corp != parts[0]:
        parts.append(f"({corp})")
    if alliance:
        parts.append(f"\\<{alliance}\\>")
    return " ".join(parts)


def build_embed(seq: int, kill: Mapping[str, Any], public_url: str | None) -> dict[str, Any]:
    """The embed of one enriched kill: victim, ship, place, value, attackers, final blow, time, links."""
    kill_id = int(kill.get("killmail_id") or 0)
    victim: Mapping[str, Any] = kill.get("victim") or {}
    ship = escape(en(victim.get("ship_name"))) or f"type {victim.get('ship_id')}"
    system = escape(kill.get("system_name")) or f"system {kill.get('system_id')}"
    region = escape(en(kill.get("region_name")))
    security = security_text(kill.get("system_security_display"))
    value = float(kill.get("total_value") or 0)
    zkb = f"{ZKILLBOARD}/kill/{kill_id}/"
    links = [f"[zKillboard]({zkb})"]
    if public_url:
        links.insert(0, f"[killboard]({public_url}/kill/{kill_id})")
    description = f"{_who(victim)} lost a {ship} in {system} ({security})" + (f", {region}" if region else "")
    blow = final_blow(kill)
    attackers = kill.get("attacker_count") or len(kill.get("attackers") or ())
    fields = [
        {"name": "Value", "value": f"{isk(value)} ISK", "inline": True},
        {"name": "Attackers", "value": str(attackers), "inline": True},
        {"name": "System", "value": f"{system} ({security})" + (f" · {region}" if region else ""), "inline": True},
    ]
    if blow is not None:
        blow_ship = escape(en(blow.get("ship_name")))
        fields.append(
            {"name": "Final blow", "value": _who(blow) + (f" · {blow_ship}" if blow_ship else ""), "inline": False}
        )
    fields.append({"name": "Links", "value": " · ".join(links), "inline": False})
    embed: dict[str, Any] = {
        "title": f"{ship} destroyed in {system}",
        "url": f"{public_url}/kill/{kill_id}" if public_url else zkb,
        "description": description,
        "color": GOLD if value >= BIG_KILL else RED,
        "fields": fields,
        "footer": {"text": f"killmail {kill_id} · seq {seq}"},
    }
    if kill.get("kill_time"):
        embed["timestamp"] = kill["kill_time"]
    if victim.get("ship_id"):
        embed["thumbnail"] = {"url": f"{IMAGE_SERVER}/types/{int(victim['ship_id'])}/render?size=128"}
    return fit(embed)


def fit(embed: dict[str, Any]) -> dict[str, Any]:
    """Cut an embed's texts to Discord's per-field limits (ellipsis marks a cut)."""
    embed["title"] = _cut(embed.get("title", ""), MAX_TITLE)
    embed["description"] = _cut(embed.get("description", ""), MAX_DESCRIPTION)
    embed["fields"] = [
        {**f, "name": _cut(f["name"], MAX_FIELD_NAME), "value": _cut(f["value"], MAX_FIELD_VALUE)}
        for f in embed.get("fields", [])[:MAX_FIELDS]
    ]
    if "footer" in embed:
        embed["footer"] = {**embed["footer"], "text": _cut(embed["footer"]["text"], MAX_FOOTER)}
    return embed


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    if cut.endswith("\\") and not cut.endswith("\\\\"):
        cut = cut[:-1]  # never leave a lone escaping backslash at the end
    return cut + "…"


def embed_length(embed: Mapping[str, Any]) -> int:
    """Characters Discord counts towards the 6,000 of a message."""
    total = len(embed.get("title", "")) + len(embed.get("description", ""))
    total += sum(len(f.get("name", "")) + len(f.get("value", "")) for f in embed.get("fields", ()))
    total += len((embed.get("footer") or {}).get("text", "")) + len((embed.get("author") or {}).get("name", ""))
    return total


@dataclass(frozen=True, slots=True)
class Message:
    """One webhook POST: the kills it carries (by seq) and its JSON body."""

    seqs: tuple[int, ...]
    body: dict[str, Any]


def pack(
    embeds: Iterable[tuple[int, dict[str, Any], bool]], allowed_mentions: dict[str, Any], mention: str | None
) -> Message:
    """The first message of (seq, embed, wants_mention) items: as many embeds as fit (at most 10 and
    6,000 characters); `mention` goes in `content` when any kill in it asks for it."""
    seqs: list[int] = []
    chosen: list[dict[str, Any]] = []
    total = 0
    ping = False
    for seq, embed, wants in embeds:
        size = embed_length(embed)
        if chosen and (len(chosen) >= MAX_EMBEDS or total + size > MAX_EMBED_TOTAL):
            break
        seqs.append(seq)
        chosen.append(embed)
        total += size
        ping = ping or wants
    body: dict[str, Any] = {"embeds": chosen, "allowed_mentions": allowed_mentions}
    if ping and mention:
        body["content"] = mention[:MAX_CONTENT]
    return Message(tuple(seqs), body)
