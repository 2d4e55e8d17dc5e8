"""Channels with real sockets: each family delivers exactly the kills it should among the 82 real
killmails, once per socket.

The expected sets are computed here from the raw ESI killmails and the static data, written
independently of killboard/kill/topics.py. Only the ISK value and the solo/npc flags come from the
server's own kill (GET /api/killmails): computing them is enrichment's job, tested elsewhere.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import aiohttp
from conftest import Client, settle
from test_ws import post, with_id_offset

from killboard.kill.staticdata import StaticData

# EVE-KILL's ship-group lists (its SHIP_GROUPS table), copied here by hand, by victim ship group.
GROUPS = {
    "big": {547, 485, 513, 902, 941, 30, 659},
    "citadel": {1657, 1406, 1404, 1408, 2017, 2016},
    "t1": {419, 27, 29, 547, 26, 420, 25, 28, 941, 463, 237, 31},
    "t2": {324, 898, 906, 540, 830, 893, 543, 541, 833, 358, 894, 831, 902, 832, 900, 834, 380},
    "t3": {963, 1305},
    "frigates": {324, 893, 25, 831, 237},
    "destroyers": {420, 541},
    "cruisers": {906, 26, 833, 358, 894, 832, 963},
    "battlecruisers": {419, 540},
    "battleships": {27, 898, 900},
    "capitals": {547, 485},
    "freighters": {513, 902},
    "supercarriers": {659},
    "titans": {30},
}
ENTITY = ("character_id", "corporation_id", "alliance_id", "faction_id")


class Expect:
    """Does a channel hold for a raw ESI killmail? Each condition written out from the issue."""

    def __init__(self, static: StaticData, server: dict[int, dict[str, Any]]) -> None:
        self.static = static
        self.server = server

    def entities(self, party: dict[str, Any]) -> dict[str, int]:
        out = {f: party[f] for f in ENTITY if party.get(f)}
        npc = self.static.npc_corporations.get(party.get("corporation_id", 0))
        if "faction_id" not in out and npc is not None and npc.faction_id:
            out["faction_id"] = npc.faction_id  # an NPC corporation fights for its faction
        return out

    def ships(self, km: dict[str, Any]) -> set[int]:
        ships = {km["victim"]["ship_type_id"]}
        for a in km["attackers"]:
            if a.get("ship_type_id") or a.get("weapon_type_id"):
                ships.add(a.get("ship_type_id") or a["weapon_type_id"])
        return ships

    def group(self, type_id: int) -> int | None:
        info = self.static.types.get(type_id)
        return info.group_id if info else None

    def part(self, part: str, km: dict[str, Any]) -> bool:
        system = self.static.systems[km["solar_system_id"]]
        region = system.region_id
        kill = self.server[km["killmail_id"]]
        victim = self.entities(km["victim"])
        attackers = [self.entities(a) for a in km["attackers"]]
        known = not (11000001 <= region <= 11000033 or 12000000 <= region <= 13000000)
        topics: dict[str, Callable[[], bool]] = {
            "kills": lambda: True,
            "all": lambda: True,
            "10b": lambda: kill["total_value"] >= 10_000_000_000,
            "5b": lambda: kill["total_value"] >= 5_000_000_000,
            "solo": lambda: kill["is_solo"],
            "npc": lambda: kill["is_npc"],
            "highsec": lambda: known and system.security >= 0.45,
            "lowsec": lambda: known and 0 < system.security < 0.45,
            "nullsec": lambda: known and system.security <= 0,
            "wspace": lambda: 11000001 <= region <= 11000033,
            "abyssal": lambda: 12000000 <= region <= 13000000,
            "pochven": lambda: region == 10000070,
        }
        if part in topics:
            return bool(topics[part]())
        if part in GROUPS:
            return self.group(km["victim"]["ship_type_id"]) in GROUPS[part]
        sep = "." if "." in part else ":"
        kind, _, raw = part.partition(sep)
        wanted = int(raw)
        if kind == "victim":
            return wanted in victim.values()
        if kind == "attacker":
            return any(wanted in a.values() for a in attackers)
        if kind in ("character", "corporation", "alliance", "faction"):
            field = kind + "_id"
            return victim.get(field) == wanted or any(a.get(field) == wanted for a in attackers)
        if kind == "ship":
            return wanted in self.ships(km)
        if kind == "group":
            return wanted in {self.group(t) for t in self.ships(km)}
        if kind == "system":
            return km["solar_system_id"] == wanted
        if kind == "constellation":
            return system.constellation_id == wanted
        if kind == "region":
            return region == wanted
        raise AssertionError(f"test does not know channel {part}")

    def holds(self, channel: str, km: dict[str, Any]) -> bool:
        return all(self.part(p, km) for p in channel.split("&"))


async def drain(ws: aiohttp.ClientWebSocketResponse) -> list[dict[str, Any]]:
    """Every kill frame queued for this socket so far: a pong is queued after all of them."""
    await ws.send_str(json.dumps({"action": "ping"}))
    kills = []
    while True:
        message = await ws.receive_json(timeout=20)
        if message["action"] == "pong":
            return kills
        assert message["action"] == "kill", message
        kills.append(message)


async def open_sub(client: Client, *channels: str) -> aiohttp.ClientWebSocketResponse:
    ws = await client.ws_connect("/ws")
    for channel in channels:
        await ws.send_str(json.dumps({"action": "sub", "channel": channel}))
        assert await ws.receive_json(timeout=5) == {"action": "subscribed", "channels": [channel]}
    return ws


async def server_kills(client: Client) -> dict[int, dict[str, Any]]:
    resp = await client.get("/api/killmails?after=0&limit=500")
    return {k["killmail_id"]: k for k in (await resp.json())["killmails"]}


def picks(killmails: list[dict[str, Any]], static: StaticData) -> list[str]:
    """Ids that occur in the data, chosen by counting it, for each id family."""
    victims, attackers, ships, attacker_ships, factions = Counter(), Counter(), Counter(), Counter(), Counter()
    for km in killmails:
        v = km["victim"]
        for f in ("alliance_id", "corporation_id", "character_id"):
            if v.get(f):
                victims[(f, v[f])] += 1
        ships[v["ship_type_id"]] += 1
        for a in km["attackers"]:
            for f in ("alliance_id", "corporation_id", "character_id"):
                if a.get(f):
                    attackers[(f, a[f])] += 1
            if a.get("ship_type_id"):
                attacker_ships[a["ship_type_id"]] += 1
            if a.get("faction_id"):
                factions[a["faction_id"]] += 1
    both = [key for key, _ in victims.most_common() if key in attackers]
    alliance = next(i for f, i in both if f == "alliance_id")
    corporation = next(i for (f, i), _ in attackers.most_common() if f == "corporation_id")
    character = next(i for (f, i), _ in attackers.most_common() if f == "character_id")
    victim_alliance = next(i for (f, i), _ in victims.most_common() if f == "alliance_id")
    faction = factions.most_common(1)[0][0]
    jita = 30000142
    constellation = static.systems[jita].constellation_id
    region = static.systems[jita].region_id
    ship = ships.most_common(1)[0][0]
    attacker_ship = attacker_ships.most_common(1)[0][0]
    group = static.types[ship].group_id
    attacker_group = static.types[attacker_ship].group_id
    return [
        f"victim.{alliance}",
        f"attacker.{alliance}",
        f"victim.{victim_alliance}",
        f"attacker.{corporation}",
        f"victim.{character}",
        f"attacker.{character}",
        f"victim.{faction}",
        f"attacker.{faction}",
        f"character:{character}",
        f"corporation:{corporation}",
        f"alliance:{alliance}",
        f"faction:{faction}",
        f"faction:{500001}",
        f"ship:{ship}",
        f"ship:{attacker_ship}",
        f"group:{group}",
        f"group:{attacker_group}",
        f"system.{jita}",
        f"system:{jita}",
        f"constellation.{constellation}",
        f"constellation:{constellation}",
        f"region.{region}",
        f"region:{region}",
        # Combinations.
        "nullsec&solo",
        "highsec&npc",
        "lowsec&t1",
        "wspace&10b",
        f"alliance:{alliance}&big",
        f"region.{region}&frigates",
        f"attacker.{corporation}&nullsec&solo",
        "kills&cruisers",
    ]


TOPIC_CHANNELS = [
    "kills",
    "all",
    "10b",
    "5b",
    "solo",
    "npc",
    "highsec",
    "lowsec",
    "nullsec",
    "wspace",
    "abyssal",
    "pochven",
    *GROUPS,
]


async def test_every_channel_family_matches_exactly_its_kills(
    make_client: Any, killmails: list[dict[str, Any]], static: StaticData
) -> None:
    client = await make_client(batch_size=20)
    channels = TOPIC_CHANNELS + picks(killmails, static)
    sockets = [await open_sub(client, c) for c in channels]
    await post(client, killmails)
    await settle(client)
    expect = Expect(static, await server_kills(client))
    received = await asyncio.gather(*(drain(ws) for ws in sockets))
    nonempty = 0
    for channel, frames in zip(channels, received, strict=True):
        ids = [f["data"]["killmail_id"] for f in frames]
        wanted = {km["killmail_id"] for km in killmails if expect.holds(channel, km)}
        assert len(ids) == len(set(ids)), f"{channel}: a kill arrived twice"
        assert set(ids) == wanted, f"{channel}: extra {set(ids) - wanted}, missing {wanted - set(ids)}"
        seqs = [f["seq"] for f in frames]
        assert seqs == sorted(seqs)
        nonempty += bool(wanted)
    # The data exercises the families: most channels have kills, none has them all but kills/all.
    assert nonempty >= len(channels) - 6
    for ws in sockets:
        await ws.close()


async def test_a_kill_matching_several_channels_arrives_once(
    client: Client, killmails: list[dict[str, Any]], static: StaticData
) -> None:
    alliance = 1354830081  # victim in 7 and attacker in 5 of the real kills
    channels = ["kills", "all", "solo", "nullsec", f"victim.{alliance}", f"attacker.{alliance}", "system:30000142"]
    ws = await open_sub(client, *channels)
    await post(client, killmails)
    await settle(client)
    frames = await drain(ws)
    ids = [f["data"]["killmail_id"] for f in frames]
    assert sorted(ids) == sorted(km["killmail_id"] for km in killmails)
    assert len(ids) == len(killmails)
    # `all` is the same channel as `kills`: unsubscribing one ends both; the others still deliver.
    await ws.send_str(json.dumps({"action": "unsub", "channel": "kills"}))
    assert (await ws.receive_json(timeout=5))["action"] == "unsubscribed"
    copies = with_id_offset(killmails, 10**10)
    await post(client, copies)
    await settle(client)
    expect = Expect(static, await server_kills(client))
    rest = channels[2:]
    wanted = {km["killmail_id"] for km in copies if any(expect.holds(c, km) for c in rest)}
    ids = [f["data"]["killmail_id"] for f in await drain(ws)]
    assert len(ids) == len(set(ids)) and set(ids) == wanted
    assert 0 < len(wanted) < len(copies)


async def test_acks_errors_and_equivalent_spellings(make_client: Any, killmails: list[dict[str, Any]]) -> None:
    client = await make_client(ws_max_channels=3, ws_max_channel_length=64)
    ws = await client.ws_connect("/ws")
    bad = {
        "nope": "unknown channel 'nope'",
        "victim.abc": "victim. needs a positive integer id",
        "system:-1": "system: needs a positive integer id",
        "alliance:0": "alliance: needs a positive integer id",
        "solo&bogus": "unknown channel 'bogus' in 'solo&bogus'",
        "solo&": "has an empty condition",
        "victim:5": "unknown channel 'victim:5'",
        "character.5": "unknown channel 'character.5'",
        "x" * 65: "is too long: at most 64 characters",
        "&".join(["solo"] * 9): "combines too many conditions: at most 8",
    }
    for channel, expected in bad.items():
        await ws.send_str(json.dumps({"action": "sub", "channel": channel}))
        reply = await ws.receive_json(timeout=5)
        assert reply["action"] == "error" and expected in reply["message"], (channel, reply)
        assert reply["channel"] == channel[:80]
    for since in (-1, "5", 1.5, True):
        await ws.send_str(json.dumps({"action": "sub", "channel": "solo", "since": since}))
        reply = await ws.receive_json(timeout=5)
        assert reply["action"] == "error" and reply["message"].startswith("since: must be a non-negative integer")
    # Three channels fill the cap; an equivalent spelling of one of them is not a fourth.
    for channel in ("wspace&solo", "nullsec", "system.30000142"):
        await ws.send_str(json.dumps({"action": "sub", "channel": channel}))
        assert await ws.receive_json(timeout=5) == {"action": "subscribed", "channels": [channel]}
    await ws.send_str(json.dumps({"action": "sub", "channel": "solo&wspace"}))
    assert await ws.receive_json(timeout=5) == {"action": "subscribed", "channels": ["solo&wspace"]}
    await ws.send_str(json.dumps({"action": "sub", "channel": "lowsec"}))
    reply = await ws.receive_json(timeout=5)
    assert reply["action"] == "error" and "too many channels: at most 3 per socket" in reply["message"]
    # Unsubscribing by the other spellings removes them: `system:` is zKillboard's `system.`.
    for channel in ("solo&wspace", "system:30000142"):
        await ws.send_str(json.dumps({"action": "unsub", "channel": channel}))
        assert await ws.receive_json(timeout=5) == {"action": "unsubscribed", "channels": [channel]}
    # Only `nullsec` is left, and none of the errors subscribed anything.
    await post(client, killmails)
    await settle(client)
    frames = await drain(ws)
    assert frames
    assert all(f["data"]["system_security"] <= 0 for f in frames)
    assert all(f["data"]["security_class"] in ("nullsec", "pochven") for f in frames)


def test_index_holds_each_condition_once_counts_its_bytes_and_drops_the_last() -> None:
    """Equal conditions parsed for different subscribers are one object in the index; `nbytes`
    is at least what tracemalloc sees them hold; the last subscriber out takes the entry along."""
    import gc
    import tracemalloc

    from killboard.kill.topics import MEMBERSHIP_BYTES, Index, condition_bytes, parse

    index: Index[int] = Index()
    first = index.add(parse("solo&wspace"), 1)
    second = index.add(parse("wspace&solo"), 2)
    assert first is second and len(index) == 1
    assert index.nbytes == condition_bytes(first) + 2 * MEMBERSHIP_BYTES
    index.remove(parse("solo&wspace"), 1)
    assert len(index) == 1
    index.remove(parse("solo&wspace"), 2)
    assert len(index) == 0 and index.nbytes == 0

    for parts in (1, 8):
        index = Index()
        holders: list[set[Any]] = [set() for _ in range(200)]
        gc.collect()
        tracemalloc.start()
        try:
            start = tracemalloc.get_traced_memory()[0]
            for s, held in enumerate(holders):
                for i in range(64):  # distinct conditions: the costly case
                    ids = (9_000_000_000_000_000_000 + (s * 64 + i) * 8 + k for k in range(parts))
                    held.add(index.add(parse("&".join(f"character:{n}" for n in ids)), s))
                for i in range(64):  # shared ones: a membership each
                    held.add(index.add(parse(f"victim.{9_000_000_000_000 + i}"), s))
            gc.collect()
            real = tracemalloc.get_traced_memory()[0] - start
        finally:
            tracemalloc.stop()
        assert real <= index.nbytes, f"{parts}-part conditions hold {real} bytes, counted {index.nbytes}"
        assert index.nbytes < real * 1.6, "counted far more than held: budgets would refuse for nothing"
        for s, held in enumerate(holders):
            for condition in held:
                index.remove(condition, s)
        assert len(index) == 0 and index.nbytes == 0
