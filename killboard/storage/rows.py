"""The storage stage's records: a kill on its way in (NewKill), one read back (StoredKill), an
inbox row, and /health's counts (Store.counts)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..kill.frames import encode
from . import participants


@dataclass(frozen=True, slots=True)
class InboxRow:
    killmail_id: int
    payload: bytes
    source: str
    live: bool


@dataclass(frozen=True, slots=True)
class NewKill:
    """An enriched kill ready to store; `body` is its JSON, encoded once for store and broadcast."""

    killmail_id: int
    killmail_hash: str
    kill_time: int
    system_id: int
    total_value: float
    # The kill's JSON, or b"" with `enriched` given: then `body` encodes it on first use. Only a
    # kill that is broadcast needs the JSON (~28 KB, ~150 us of ujson); what is stored is
    # `source`, so an import or a kill nobody subscribed to never pays for it.
    _body: bytes
    # codec.source_document of the kill: what is stored. Empty: store `body` itself (codec 0).
    source: bytes = b""
    # Player names the body was enriched with; kept in `names` so reads render the same names.
    names: Mapping[int, str] = field(default_factory=dict)
    enriched: Mapping[str, Any] | None = None
    # Who took part (storage/participants.py), written with the kill; None: work it out from `enriched`.
    participation: participants.Participation | None = None
    # `source` deflated with the store's dictionary (Store.pack_source), made before the write; empty:
    # the write makes it. In the write, zlib let go of the GIL once a kill and the thread then
    # waited for the busy event loop to give it back: ~0.5 ms a kill on the write's critical path.
    packed: bytes = b""
    # What Store.preparers worked out of the kill before its write, by preparer (the entity
    # figures' share): the write only adds it up.
    prepared: dict[str, Any] = field(default_factory=dict)

    @property
    def body(self) -> bytes:
        if not self._body and self.enriched is not None:
            object.__setattr__(self, "_body", encode(self.enriched))  # frozen: a cache, not a change
        return self._body


@dataclass(frozen=True, slots=True)
class StoredKill:
    seq: int
    killmail_id: int
    kill_time: int
    body: bytes  # uncompressed JSON


@dataclass(frozen=True, slots=True)
class Counts:
    """The store's figures in /health, read together (Store.counts)."""

    inbox: int  # accepted submissions not yet stored
    kills: int  # kills stored (as count())
    last_seq: int  # 0 when none
    names_pending: int  # kills stored before all their player names were known
