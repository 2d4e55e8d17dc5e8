"""Whatever validation accepts, the worker stores: a property test over the validator's accepted
space (times, ids, numbers, nested items, Unicode, unknown fields), run through the real path a
kill takes after its 202: inbox payload -> enrich -> a real SQLite store -> read back."""

from __future__ import annotations

import asyncio
import copy
import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import ujson
from conftest import load_killmails
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st

from killboard.ingest.pipeline import Pipeline
from killboard.ingest.queue import KillQueue, Pending, from_inbox, inbox_payload
from killboard.kill.prices import price_book
from killboard.kill.staticdata import StaticData
from killboard.kill.validate import MAX_INT, Invalid, parse_submission
from killboard.storage.rows import InboxRow
from killboard.storage.store import Store

REAL = load_killmails()
ATTACKERS = [a for k in REAL for a in k["attackers"]]
ITEMS = [i for k in REAL for i in k["victim"].get("items", [])]


def mostly(valid: st.SearchStrategy[Any], other: st.SearchStrategy[Any], n: int = 5) -> st.SearchStrategy[Any]:
    """`valid` about n times in n + 1: a kill has many fields, and one bad value refuses all of it."""
    return st.integers(0, n).flatmap(lambda i: other if i == 0 else valid)


# Ints as JSON carries them: mostly in range, sometimes just past 64 bits (refused, never stored).
edge_ints = st.one_of(st.integers(-(2**70), 2**70), st.sampled_from([0, -1, MAX_INT + 1, -MAX_INT - 1, 2**64]))
ints = mostly(st.one_of(st.integers(-MAX_INT, MAX_INT), st.sampled_from([0, 1, -1, MAX_INT, -MAX_INT])), edge_ints)
positive = mostly(st.one_of(st.integers(1, MAX_INT), st.sampled_from([1, MAX_INT])), edge_ints)
floats = mostly(st.floats(allow_nan=False, allow_infinity=False), st.floats())
numbers = st.one_of(ints, floats)
text = st.text(st.characters(codec=None, exclude_categories=()), max_size=20)  # lone surrogates included
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), text),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(text, inner, max_size=3)),
    max_leaves=8,
)
extra = st.dictionaries(text, json_values, max_size=2)
offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
moments = mostly(
    # A day inside the accepted range, so a +14:00 or -14:00 offset stays inside it too.
    st.datetimes(min_value=datetime(2003, 5, 7), max_value=datetime(9999, 12, 30, 23, 59, 59)),
    # The edges: years below 1000 (strftime wrote them unpadded), datetime's own limits.
    st.one_of(
        st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(2003, 5, 7)),
        st.sampled_from([datetime.min, datetime.max, datetime(999, 6, 1), datetime(2003, 5, 5, 23, 59, 59)]),
    ),
    n=4,
)


@st.composite
def times(draw: st.DrawFn) -> object:
    when = draw(moments)
    kind = draw(
        mostly(st.sampled_from(["naive", "offset", "z", "micro", "date"]), st.sampled_from(["text", "other"]), n=15)
    )
    if kind == "naive":
        return when.isoformat()
    if kind == "offset":
        return when.replace(tzinfo=draw(offsets)).isoformat()
    if kind == "z":
        return when.strftime("%Y-%m-%dT%H:%M:%S").rjust(19, "0") + "Z"
    if kind == "micro":
        return when.isoformat(timespec="microseconds") + "Z"
    if kind == "date":
        return when.date().isoformat()
    if kind == "text":
        return draw(text)
    return draw(json_values)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.just(Ellipsis), st.none(), strategy, strategy)  # Ellipsis: leave the key out


def required(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return mostly(strategy, st.sampled_from([Ellipsis, None]))


def put(obj: dict[str, Any], key: str, value: object) -> None:
    if value is Ellipsis:
        obj.pop(key, None)
    else:
        obj[key] = value


@st.composite
def items(draw: st.DrawFn, depth: int = 1) -> list[dict[str, Any]]:
    out = []
    for base in draw(st.lists(st.sampled_from(ITEMS), max_size=4)):
        item = copy.deepcopy(base)
        for key in ("item_type_id", "flag", "singleton"):
            if draw(st.integers(0, 3)) == 0:
                put(item, key, draw(required(positive if key == "item_type_id" else ints)))
        for key in ("quantity_destroyed", "quantity_dropped"):
            if draw(st.integers(0, 3)) == 0:
                put(item, key, draw(maybe(ints)))
        if depth <= 5 and draw(st.integers(0, 3)) == 0:
            item["items"] = draw(items(depth + 1))
        item.update(draw(extra))
        out.append(item)
    return out


@st.composite
def entity(draw: st.DrawFn, obj: dict[str, Any]) -> None:
    for key in ("character_id", "corporation_id", "alliance_id", "faction_id"):
        if draw(st.integers(0, 5)) == 0:
            put(obj, key, draw(maybe(positive)))


@st.composite
def killmails(draw: st.DrawFn) -> object:
    km = copy.deepcopy(draw(st.sampled_from(REAL)))
    if draw(st.integers(0, 2)) == 0:
        km["killmail_id"] = draw(positive)
    km["killmail_time"] = draw(times())
    if draw(st.integers(0, 5)) == 0:
        km["solar_system_id"] = draw(positive)
    for key in ("war_id", "moon_id"):
        if draw(st.integers(0, 4)) == 0:
            put(km, key, draw(maybe(positive)))
    victim = km["victim"]
    if draw(st.integers(0, 3)) == 0:
        victim["ship_type_id"] = draw(positive)
    if draw(st.integers(0, 3)) == 0:
        victim["damage_taken"] = draw(ints)
    draw(entity(victim))
    if draw(st.booleans()):
        victim["items"] = draw(items())
    if draw(st.integers(0, 3)) == 0:
        victim["position"] = {axis: draw(numbers) for axis in "xyz"}
    victim.update(draw(extra))
    if draw(st.booleans()):
        attackers = []
        for base in draw(st.lists(st.sampled_from(ATTACKERS), min_size=1, max_size=5)):
            attacker = copy.deepcopy(base)
            if draw(st.integers(0, 3)) == 0:
                put(attacker, "damage_done", draw(required(ints)))
            if draw(st.integers(0, 3)) == 0:
                attacker["security_status"] = draw(numbers)
            for key in ("ship_type_id", "weapon_type_id"):
                if draw(st.integers(0, 5)) == 0:
                    put(attacker, key, draw(maybe(positive)))
            draw(entity(attacker))
            attacker.update(draw(extra))
            attackers.append(attacker)
        km["attackers"] = attackers
    km.update({k: v for k, v in draw(extra).items() if k not in ("esi", "hash", "package", "victim")})
    zkb: dict[str, Any] | None = None
    if draw(st.booleans()):
        zkb = {
            k: draw(mostly(floats, numbers)) for k in ("fittedValue", "droppedValue", "destroyedValue", "totalValue")
        }
        zkb.update({k: draw(st.one_of(st.booleans(), json_values)) for k in ("npc", "solo", "awox")})
        zkb.update(draw(extra))
    form = draw(st.sampled_from(["esi", "r2z2", "redisq"]))
    hash_ = km.pop("killmail_hash")
    if form == "esi":
        return {**km, "killmail_hash": hash_, **({"zkb": zkb} if zkb is not None else {})}
    if form == "r2z2":
        return {"killmail_id": km["killmail_id"], "hash": hash_, "esi": km, "zkb": {**(zkb or {}), "hash": hash_}}
    return {"package": {"killID": km["killmail_id"], "killmail": km, "zkb": {**(zkb or {}), "hash": hash_}}}


@pytest.fixture
def world(tmp_path: Path, static: StaticData) -> Iterator[tuple[asyncio.Runner, Pipeline]]:
    """One real store and pipeline for every example (a fresh one each would be 100x slower)."""
    with asyncio.Runner() as runner:
        store = runner.run(Store.open(tmp_path / "kb.sqlite3"))
        pipeline = Pipeline(store, static, price_book(static), KillQueue(1, 2**20))
        try:
            yield runner, pipeline
        finally:
            runner.run(store.close())


async def through_the_worker(pipeline: Pipeline, item: object) -> None:
    try:
        sub = parse_submission(item)
    except Invalid as exc:
        assert exc.errors and all(": " in e for e in exc.errors)  # refused with a field path: fine
        event("refused")
        return
    event("accepted")
    # What the HTTP handler records before its 202 ...
    async with pipeline.store.transaction() as db:  # the same id drawn again: start it afresh
        await db.execute("DELETE FROM kills WHERE killmail_id = ?", (sub.killmail_id,))
    accepted, _ = await pipeline.store.add_to_inbox([InboxRow(sub.killmail_id, inbox_payload(sub), "http", True)])
    assert accepted == [sub.killmail_id]
    # ... is what the worker reads back after a crash ...
    (row,) = [r for r in await pipeline.store.inbox(sub.killmail_id - 1, 1) if r.killmail_id == sub.killmail_id]
    again = from_inbox(row).submission
    assert ujson.dumps(again.esi) == ujson.dumps(sub.esi) and again.killmail_hash == sub.killmail_hash
    # ... and what it stores: never dropped.
    stored = await pipeline.process([Pending(again, live=True)])
    assert [k.killmail_id for _, k in stored] == [sub.killmail_id]
    assert pipeline.store.path.exists()
    assert sub.killmail_id not in {r.killmail_id for r in await pipeline.store.inbox(sub.killmail_id - 1, 1)}
    read = await pipeline.store.get(sub.killmail_id)
    assert read is not None
    written, back = ujson.loads(stored[0][1].body), ujson.loads(read.body)
    assert back == written  # read back exactly as it was broadcast
    assert back["killmail_id"] == sub.killmail_id
    assert datetime.strptime(back["kill_time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).year >= 2003
    assert all(math.isfinite(back[k]) for k in ("total_value", "dropped_value", "destroyed_value"))
    json.loads(read.body)  # strict JSON: no NaN or Infinity reaches a browser


def real_with(**changes: object) -> dict[str, Any]:
    return {**copy.deepcopy(REAL[0]), **changes}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(item=killmails())
# The two the issue found: answered 202, then dropped by the worker / a 500.
@example(item=real_with(killmail_time="0999-06-01T00:00:00Z"))
@example(item=real_with(killmail_time="0001-01-01T00:00:00+14:00"))
@example(item=real_with(killmail_time="9999-12-31T23:00:00-14:00"))
def test_nothing_accepted_is_dropped(world: tuple[asyncio.Runner, Pipeline], item: object) -> None:
    runner, pipeline = world
    # Through JSON as the server receives it: what ujson cannot read is a 400 at the door.
    try:
        received = ujson.loads(json.dumps(item))
    except ValueError:
        assume(False)
    runner.run(through_the_worker(pipeline, received))
