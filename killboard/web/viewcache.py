"""Rendered HTML and JSON kept in memory, exact as kills are stored, renamed and pruned.

One cache, one byte bound, least recently used first, for two kinds of entries:

- **rows**, by (kind, language, kill id): a feed row's HTML ("feed"; "entity": the lighter row
  of an entity page, killboard/entities/rows.py). A row depends only on the kill and the
  reader's language (names link to entity pages, not to the filter), so a kill shown on `/`
  and on five filtered views is rendered once. It is kept until that kill changes: the name
  filler or a corrected ESI body rewrote it, or retention pruned it (`changed`).
- **pages**, by view key (the view's canonical name + the reader's language): a whole response
  body (and its gzip) valid for one *version*: what the page depends on (the last stored seq
  for the feed; a battle's own row; an entity's newest kill) plus the generation, and
  optionally until a wall-clock time (a battle stops being "ongoing"). A view that nothing
  touched since is answered from here (304 when the browser has it), without reading kills.

The feed (web/pages.py `index`) keeps both; battle and entity pages and their JSON keep pages
only (web/keptpages.py). Kills stored by another process (an import beside the server) bump the
last seq and so reach every page; whatever else another process writes (names, rewritten kills,
rebuilt battles) empties the cache within a quarter second (web/foreign.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import sys
import time
from collections import OrderedDict
from collections.abc import Collection, Hashable
from dataclasses import dataclass, field

# Player ids waited for at most (~100 bytes each); past it every kept row waiting goes.
MAX_NAMELESS = 50_000
# What an entry costs beyond its bytes (the key, the dict slot, the object): counted, so the
# bound holds for many small rows too.
OVERHEAD = 200
# An entry larger than this share of the bound is not kept: one big answer (200 fleet fights of
# /api/group/25/kills in every language: ~21 MB) pushed every other page out, so a client
# repeating it with a new query each time had every page rendered again for everyone.
MAX_ENTRY_SHARE = 4

ViewKey = tuple[str, str]  # (canonical view, language)
Version = tuple[Hashable, ...]  # what the page depends on, then the generation
_Key = tuple[Hashable, ...]  # ("page", view, lang) or ("row", kind, lang, killmail id)


@dataclass(frozen=True, slots=True)
class Page:
    version: Version
    body: bytes
    etag: str
    gzipped: bytes | None = None  # the body gzipped once, for the many readers that accept it
    content_type: str = "text/html"
    expires: float | None = None  # wall-clock time after which it is stale whatever the version


def _size(entry: Page | str) -> int:
    """The memory an entry holds: a row's str counts 1, 2 or 4 bytes a character (a Japanese
    row twice or four times an English one of the same length), so its real size is taken."""
    if isinstance(entry, Page):
        return sys.getsizeof(entry.body) + (sys.getsizeof(entry.gzipped) if entry.gzipped else 0) + OVERHEAD
    return sys.getsizeof(entry) + OVERHEAD


@dataclass
class ViewCache:
    """The rendered rows and pages most recently used, at most `max_bytes` in all."""

    max_bytes: int = 32 * 2**20
    # Bumps on every change to kills already stored: pages of an older generation are stale.
    generation: int = 0
    # Part of every ETag: a restart (another generation 0) never matches an old one.
    _instance: str = field(default_factory=lambda: secrets.token_hex(4))
    _entries: OrderedDict[_Key, Page | str] = field(default_factory=OrderedDict)
    _pages: set[_Key] = field(default_factory=set)
    _row_kinds: set[tuple[str, str]] = field(default_factory=set)  # (kind, language) that have rows
    _bytes: int = 0
    # Kept rows that show a player id without its name, by that id: when ESI names it (the
    # store's on_named), those rows go (a compact stored kill renders the name at once).
    _nameless: dict[int, set[int]] = field(default_factory=dict)

    def version(self, *depends: Hashable) -> Version:
        return (*depends, self.generation)

    def page(self, key: ViewKey, version: Version) -> Page | None:
        entry = self._entries.get(("page", *key))
        if not isinstance(entry, Page) or entry.version != version:
            return None
        if entry.expires is not None and time.time() >= entry.expires:
            return None
        self._entries.move_to_end(("page", *key))
        return entry

    def row(self, lang: str, killmail_id: int, kind: str = "feed") -> str | None:
        """The kill's kept row of this kind in this language, if any."""
        key = ("row", kind, lang, killmail_id)
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry if isinstance(entry, str) else None

    def put_row(self, lang: str, killmail_id: int, html: str, generation: int, kind: str = "feed") -> None:
        """Keep a row rendered from a kill read under `generation`: not if a kill changed since."""
        if generation == self.generation:
            self._row_kinds.add((kind, lang))
            self._put(("row", kind, lang, killmail_id), html)

    def put_page(
        self,
        key: ViewKey,
        version: Version,
        body: bytes,
        generation: int,
        gzipped: bytes | None = None,
        content_type: str = "text/html",
        expires: float | None = None,
    ) -> Page:
        """The page for `version`; kept only if no kill changed since `generation` was taken
        (before anything was read for it)."""
        etag_source = f"{self._instance}:{key[0]}:{key[1]}:{version!r}".encode()
        etag = '"' + hashlib.blake2b(etag_source, digest_size=12).hexdigest() + '"'
        page = Page(version, body, etag, gzipped, content_type, expires)
        if generation == self.generation and version[-1] == self.generation:
            self._put(("page", *key), page)
            if ("page", *key) in self._entries:
                self._pages.add(("page", *key))
        return page

    def _put(self, key: _Key, entry: Page | str) -> None:
        self._drop(key)
        size = _size(entry)
        if size > self.max_bytes // MAX_ENTRY_SHARE:
            return
        self._entries[key] = entry
        self._bytes += size
        while self._bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def waiting_for_names(self, killmail_id: int, entity_ids: Collection[int]) -> None:
        """A kept row of this kill shows these ids without their names."""
        if len(self._nameless) > MAX_NAMELESS:
            self.changed({k for kills in self._nameless.values() for k in kills})  # bounded: start over
        for entity_id in entity_ids:
            self._nameless.setdefault(entity_id, set()).add(killmail_id)

    def named(self, entity_ids: Collection[int]) -> None:
        """Names were saved for these ids: rows that showed them nameless go."""
        kills = {k for i in entity_ids if (waiting := self._nameless.pop(i, None)) for k in waiting}
        # Even with none: a row being rendered now may show one of them nameless (not kept then),
        # and battle and entity pages show names of their own.
        self.changed(kills)

    def changed(self, killmail_ids: Collection[int]) -> None:
        """Stored kills were rewritten (late names, a corrected body) or pruned, or something a
        page shows changed beside them: forget their rows, and every page (each may show one of
        them, or a count that moved)."""
        self.generation += 1
        for killmail_id in killmail_ids:
            for kind, lang in self._row_kinds:
                self._drop(("row", kind, lang, killmail_id))
        for key in list(self._pages):
            self._drop(key)
        if len(self._nameless) > MAX_NAMELESS:
            self._nameless.clear()

    def forget_all(self) -> None:
        """Something changed that no hook named (another process wrote to the database: names,
        rewritten kills, rebuilt battles; web/foreign.py): every row and page goes."""
        self.generation += 1
        self._entries.clear()
        self._pages.clear()
        self._row_kinds.clear()
        self._nameless.clear()
        self._bytes = 0

    def _drop(self, key: _Key) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= _size(entry)
            if isinstance(entry, Page):
                self._pages.discard(key)

    def __len__(self) -> int:
        """How many pages are kept."""
        return len(self._pages)

    @property
    def rows(self) -> int:
        """How many rows are kept, in all languages."""
        return len(self._entries) - len(self._pages)

    @property
    def bytes(self) -> int:
        return self._bytes


@dataclass
class Rendering:
    """Pages being rendered now, by (view key, version): a view that finds its page here waits for
    that render instead of running the handler again (a link posted on a forum brings many
    readers of one page at once, right after a kill changed it). Bounded by the requests in flight."""

    _flights: dict[tuple[ViewKey, Version], asyncio.Future[Page | None]] = field(default_factory=dict)

    def join(self, key: ViewKey, version: Version) -> asyncio.Future[Page | None] | None:
        """The render under way for this page, if any."""
        return self._flights.get((key, version))

    def start(self, key: ViewKey, version: Version) -> asyncio.Future[Page | None]:
        flight: asyncio.Future[Page | None] = asyncio.get_running_loop().create_future()
        self._flights[(key, version)] = flight
        return flight

    def end(self, key: ViewKey, version: Version, page: Page | None) -> None:
        flight = self._flights.pop((key, version))
        if not flight.done():
            flight.set_result(page)

    def __len__(self) -> int:
        return len(self._flights)
