"""Rendered HTML kept per view and language, exact as kills are stored, renamed and pruned.

A page that shows stored kills (the feed, a filtered feed; later a battle or an entity page)
keeps two things here under its key (the view's canonical name + the reader's language):

- its **rows**: one rendered HTML fragment per shown kill. A row depends only on the kill and
  the view, so it is rendered once and reused until that kill changes: the name filler or a
  corrected ESI body rewrote it, or retention pruned it (`changed`).
- its **page**: the whole response body, valid for one `version` = (the last stored seq, the
  generation). A view that nothing touched since is answered from here (and with 304 when the
  browser already has it), without reading the database or running Jinja.

To plug in a page: `key = (view, lang)`; `cached = cache.page(key, version)`; else take
`generation = cache.generation` before reading, render each shown kill through
`rows(key)`/`put_row(key, id, html, generation)` (a kill that changed meanwhile is not kept),
then `put_page(key, version, body)`. See web/pages.py `index`.

Kills stored by another process (an import beside the server) bump the last seq and so reach
every page; a rewrite in another process does not notify this one (none does so today).
Everything is bounded in bytes: least recently used views go first.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass, field

# Player ids waited for at most (~100 bytes each); past it every kept row waiting goes.
MAX_NAMELESS = 50_000

ViewKey = tuple[str, str]  # (canonical view, language)
Version = tuple[int, int]  # (last stored seq, generation)


@dataclass(frozen=True, slots=True)
class Page:
    version: Version
    body: bytes
    etag: str
    gzipped: bytes | None = None  # the body gzipped once, for the many readers that accept it


@dataclass
class _View:
    rows: dict[int, str] = field(default_factory=dict)
    page: Page | None = None
    size: int = 0


@dataclass
class ViewCache:
    """The rendered rows and pages of the most recently used views, at most `max_bytes`."""

    max_bytes: int = 32 * 2**20
    # Bumps on every change to kills already stored: pages of an older generation are stale.
    generation: int = 0
    # Part of every ETag: a restart (another generation 0) never matches an old one.
    _instance: str = field(default_factory=lambda: secrets.token_hex(4))
    _views: OrderedDict[ViewKey, _View] = field(default_factory=OrderedDict)
    _bytes: int = 0
    # Kept rows that show a player id without its name, by that id: when ESI names it (the
    # store's on_named), those rows go (a compact stored kill renders the name at once).
    _nameless: dict[int, set[int]] = field(default_factory=dict)

    def version(self, last_seq: int) -> Version:
        return (last_seq, self.generation)

    def page(self, key: ViewKey, version: Version) -> Page | None:
        view = self._views.get(key)
        if view is None or view.page is None or view.page.version != version:
            return None
        self._views.move_to_end(key)
        return view.page

    def rows(self, key: ViewKey) -> dict[int, str]:
        """The rendered rows kept for this view (read-only for the caller)."""
        view = self._views.get(key)
        return view.rows if view is not None else {}

    def put_page(
        self,
        key: ViewKey,
        version: Version,
        rows: dict[int, str],
        body: bytes,
        generation: int,
        gzipped: bytes | None = None,
    ) -> Page:
        """Keep the page and exactly the rows it shows (rows of kills gone from it are dropped).

        Rows rendered under an older `generation` than now are not kept: a kill changed while
        they were read. The page is returned either way; it is kept only if still current."""
        etag_source = f"{self._instance}:{key[0]}:{key[1]}:{version[0]}:{version[1]}".encode()
        page = Page(version, body, '"' + hashlib.blake2b(etag_source, digest_size=12).hexdigest() + '"', gzipped)
        if generation != self.generation:
            return page
        self._drop(key)
        view = _View(rows=rows, page=page if version[1] == self.generation else None)
        view.size = len(body) + len(gzipped or b"") + sum(len(html) for html in rows.values()) + 200 * len(rows)
        if view.size > self.max_bytes:
            return page
        self._views[key] = view
        self._bytes += view.size
        while self._bytes > self.max_bytes:
            self._drop(next(iter(self._views)))
        return page

    def waiting_for_names(self, killmail_id: int, entity_ids: Collection[int]) -> None:
        """A kept row of this kill shows these ids without their names."""
        if len(self._nameless) > MAX_NAMELESS:
            self.changed({k for kills in self._nameless.values() for k in kills})  # bounded: start over
        for entity_id in entity_ids:
            self._nameless.setdefault(entity_id, set()).add(killmail_id)

    def named(self, entity_ids: Collection[int]) -> None:
        """Names were saved for these ids: rows that showed them nameless go."""
        kills = {k for i in entity_ids if (waiting := self._nameless.pop(i, None)) for k in waiting}
        # Even with none: a row being rendered now may show one of them nameless (not kept then).
        self.changed(kills)

    def changed(self, killmail_ids: Collection[int]) -> None:
        """Stored kills were rewritten (late names, a corrected body) or pruned: forget their
        rows everywhere, and every page (each may show one of them, or a count that moved)."""
        self.generation += 1
        for view in self._views.values():
            for killmail_id in killmail_ids:
                if (html := view.rows.pop(killmail_id, None)) is not None:
                    view.size -= len(html) + 200
            if view.page is not None:
                view.size -= len(view.page.body) + len(view.page.gzipped or b"")
                view.page = None
        self._bytes = sum(view.size for view in self._views.values())
        if len(self._nameless) > MAX_NAMELESS:
            self._nameless.clear()

    def _drop(self, key: ViewKey) -> None:
        view = self._views.pop(key, None)
        if view is not None:
            self._bytes -= view.size

    def __len__(self) -> int:
        return len(self._views)

    @property
    def bytes(self) -> int:
        return self._bytes
