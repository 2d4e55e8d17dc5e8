"""The entities subsystem while the server runs: figures and kills read, names searched, kept live."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import ujson

from ..kill import topics
from ..kill.display import en
from ..kill.frames import with_seq
from ..kill.staticdata import StaticData
from ..storage import participants
from ..storage.participants import Kind
from ..storage.store import Store
from . import backlog, figures, rows, search

log = logging.getLogger(__name__)

KINDS: Mapping[str, Kind] = participants.KIND_NAMES
NAMES_REFRESH = 5.0  # seconds between looks for names that arrived (ESI, new kills)
SCAN_LIMIT = 1000  # index rows a filtered kills page looks through before it answers


@dataclass(slots=True)
class Entities:
    """Figures, kills and search over one store; `start` attaches it, `stop` ends its tasks."""

    static: StaticData
    index: search.SearchIndex = field(default_factory=search.SearchIndex)
    store: Store | None = None
    pilots: rows.PilotCache = field(default_factory=rows.PilotCache)  # the page rows' pilots
    html: rows.RowStore = field(default_factory=rows.NoRows)  # the page rows, rendered
    # False while kills stored before the figures existed are being counted in (figures change
    # without a new kill then: web/keptpages.py keeps no entity page meanwhile).
    caught_up: bool = False
    _names_seen: float = 0.0
    # One refresh at a time: a bulk load runs in a thread from a copy of the entries, and a
    # name added meanwhile by another refresh would be lost when it swaps its lists in.
    _refreshing: asyncio.Lock = field(default_factory=asyncio.Lock)
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    async def start(self, store: Store) -> None:
        # First, before any await: the participant backlog may start writing at the next one.
        backlog.attach(store, self.static)
        self.store = store
        self.index.load(await asyncio.to_thread(lambda: list(search.static_entries(self.static))))
        await self.refresh_names()
        self._tasks = [
            asyncio.create_task(self._catch_up(), name="killboard-entities-backlog"),
            asyncio.create_task(self._follow_names(), name="killboard-entities-names"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with suppress(asyncio.CancelledError):
                await task

    async def _catch_up(self) -> None:
        assert self.store is not None
        try:
            if done := await backlog.catch_up(self.store, self.static):
                log.info("entity figures: %d kills stored before them are counted in", done)
            self.caught_up = True
        except (sqlite3.Error, OSError):
            log.exception("entity figures: counting older kills failed; it resumes at the next start")

    async def _follow_names(self) -> None:
        while True:
            await asyncio.sleep(NAMES_REFRESH)
            try:
                await self.refresh_names()
            except (sqlite3.Error, OSError) as exc:
                log.warning("entity search: reading new names failed (%s); retrying", exc)

    async def refresh_names(self) -> int:
        """Merge the player names stored since the last look into the search index."""
        async with self._refreshing:
            return await self._refresh_names()

    async def _refresh_names(self) -> int:
        assert self.store is not None
        rows = await self.store.query(
            "SELECT id, name, category, updated_at FROM names WHERE updated_at >= ? ORDER BY updated_at",
            (self._names_seen,),
        )
        unsure: list[tuple[int, str]] = []
        entries: list[search.Entry] = []
        bulk = len(rows) > 1000  # the first load: one sort instead of an insert each
        for entity_id, name, category, updated in rows:
            self._names_seen = max(self._names_seen, updated)
            kind = search.player_kind(entity_id, category)
            if kind is None:
                unsure.append((entity_id, name))
            elif bulk:
                entries.append(search.Entry(name.casefold(), search.KIND_RANK[kind], entity_id, kind, name, ""))
            else:
                self.index.add_player(kind, entity_id, name)
        for entity_id, name in unsure:  # ids CCP gave before 2010: the index says what they are
            found = await self.store.query(
                "SELECT kind FROM entity_kills WHERE kind IN (1, 2, 3) AND id = ? LIMIT 1", (entity_id,)
            )
            if found:
                kind = Kind(found[0][0]).name.lower()
                if bulk:
                    entries.append(search.Entry(name.casefold(), search.KIND_RANK[kind], entity_id, kind, name, ""))
                else:
                    self.index.add_player(kind, entity_id, name)
        if entries:
            await asyncio.to_thread(self.index.load, entries)
        return len(rows)

    # -- reads -------------------------------------------------------------------------------

    def static_name(self, kind: str, entity_id: int, lang: str = "en") -> str | None:
        s = self.static
        if kind == "ship":
            names = s.type_names(entity_id)
            return (names.get(lang) or names.get("en")) if names else None
        if kind == "group":
            group = s.groups.get(entity_id)
            return (group.names.get(lang) or en(group.names)) if group else None
        if kind == "system":
            system = s.systems.get(entity_id)
            return system.name if system else None
        if kind == "region":
            region = s.regions.get(entity_id)
            return en(region.names) if region else None
        if kind == "corporation":  # an NPC corporation (Serpentis, CONCORD …): ESI is never asked
            npc = s.npc_corporations.get(entity_id)
            return npc.name if npc else None
        return None

    async def names(self, pairs: set[tuple[str, int]], lang: str = "en") -> dict[tuple[str, int], str]:
        """Names of (kind, id) pairs: static data, else the names table; unknown ones are left out."""
        out: dict[tuple[str, int], str] = {}
        players: list[int] = []
        for kind, entity_id in pairs:
            if (name := self.static_name(kind, entity_id, lang)) is not None:
                out[(kind, entity_id)] = name
            elif kind in search.PLAYER_KINDS:
                players.append(entity_id)
        if players:
            assert self.store is not None
            known = await self.store.names(players)
            out.update(
                ((kind, i), known[i])
                for kind, i in pairs
                if kind in search.PLAYER_KINDS and (kind, i) not in out and i in known
            )
        return out

    async def figures(self, kind: str, entity_id: int, lang: str = "en") -> dict[str, Any] | None:
        """The figures of GET /api/{kind}/{id}; None when the server knows nothing of the entity."""
        assert self.store is not None
        code = int(KINDS[kind])
        months = await self.store.query(
            "SELECT month, kills, losses, solo, isk_destroyed, isk_lost FROM entity_months WHERE kind = ? AND id = ?",
            (code, entity_id),
        )
        tops = await self.store.query(
            "SELECT what, other, n FROM entity_tops WHERE kind = ? AND id = ?", (code, entity_id)
        )
        numbers = figures.figures(months, tops, time.time(), itself=entity_id if kind in search.PLAYER_KINDS else None)
        wanted = {(kind, entity_id)} | {
            (figures.top_kind(KINDS[kind], what), other)
            for what, name in figures.TOP_NAMES.items()
            for other, _ in numbers.tops.get(name, ())
        }
        names = await self.names(wanted, lang)
        if not months and (kind, entity_id) not in names:
            return None
        top_lists = {
            name: [
                {
                    "kind": (k := figures.top_kind(KINDS[kind], what)),
                    "id": other,
                    "name": names.get((k, other)),
                    "count": n,
                }
                for other, n in numbers.tops.get(name, ())
            ]
            for what, name in figures.TOP_NAMES.items()
        }
        return {
            "kind": kind,
            "id": entity_id,
            "name": names.get((kind, entity_id)),
            "kills": numbers.kills,
            "losses": numbers.losses,
            "solo_kills": numbers.solo,
            "isk_destroyed": numbers.isk_destroyed,
            "isk_lost": numbers.isk_lost,
            "efficiency": numbers.efficiency,
            "months": numbers.months,
            "top": top_lists,
            "channel": f"{kind}:{entity_id}",
        }

    async def page_seqs(
        self, kind: str, entity_id: int, role: str | None, before: int | None, limit: int
    ) -> tuple[list[int], int | None]:
        """The seqs of an entity page's rows: its kills (role "kill"), losses ("loss") or both,
        newest first, before seq `before`; and the `before` of the next page (None: none older).
        Like `kills`, one page looks through SCAN_LIMIT index rows at most: a tab of rare
        losses may show fewer rows and link on to the rest."""
        assert self.store is not None
        out: list[int] = []
        cursor, scanned = before, 0
        while scanned < SCAN_LIMIT:
            step = min(SCAN_LIMIT - scanned, limit + 1 if role is None else 4 * (limit + 1))
            rows = await self.store.kills_of(KINDS[kind], entity_id, cursor, step)
            scanned += len(rows)
            for seq, code in rows:
                if _has_role(code, role):
                    if len(out) == limit:
                        return out, out[-1]  # one more matches: an older page follows
                    out.append(seq)
            if len(rows) < step:
                return out, None
            cursor = rows[-1][0]
        return out, cursor

    async def kills(
        self,
        kind: str,
        entity_id: int,
        role: str | None,
        before: int | None,
        limit: int,
        condition: topics.Condition | None,
    ) -> tuple[list[tuple[int, bytes, dict[str, Any]]], int | None]:
        """(seq, JSON, parsed kill) of an entity's kills (role "kill") or losses ("loss") or both,
        newest first, before seq `before`, matching `condition`; and the cursor of the next page."""
        assert self.store is not None
        out: list[tuple[int, bytes, dict[str, Any]]] = []
        cursor = before
        scanned = 0
        while len(out) < limit and scanned < SCAN_LIMIT:
            step = limit if condition is None else min(SCAN_LIMIT - scanned, 4 * limit)
            rows = await self.store.kills_of(KINDS[kind], entity_id, cursor, step)
            if not rows:
                return out, None
            scanned += len(rows)
            cursor = rows[-1][0]
            seqs = [seq for seq, code in rows if _has_role(code, role)]
            stored = await self.store.by_seqs(seqs) if seqs else []
            stored.reverse()  # newest first, as the index gave them
            decoded = await asyncio.to_thread(_parse, [(k.seq, k.body) for k in stored])
            for seq, body, kill in decoded:
                if condition is None or condition.matches(topics.kill_facts(kill)):
                    out.append((seq, with_seq(seq, body), kill))
                    if len(out) == limit:
                        return out, seq
            if len(rows) < step:
                return out, None
        return out, cursor


def _parse(rows: list[tuple[int, bytes]]) -> list[tuple[int, bytes, dict[str, Any]]]:
    return [(seq, body, ujson.loads(body)) for seq, body in rows]


def _has_role(code: int, role: str | None) -> bool:
    if role == "kill":
        return participants.is_kill(code)
    if role == "loss":
        return participants.is_loss(code)
    return True
