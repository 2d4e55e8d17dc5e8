"""The database's schema: its migrations, applied in order at open, and the state keys they set.

Each index kept beside the kills has its tables here or in a module of its own in storage/
(participants.py, battle_tables.py, figures_schema.py): the store applies them and imports no
later stage.
"""

from __future__ import annotations

import logging

import aiosqlite

from . import battle_tables, participants
from .figures_schema import FIGURES_BACKLOG
from .figures_schema import SCHEMA as FIGURES_SCHEMA

log = logging.getLogger(__name__)

# State key: kills up to this seq were stored before the participant index and wait for it.
INDEX_BACKLOG = "participants.backlog_through_seq"
# State key: kills indexed up to this seq may name a weapon as an attacker's ship, and wait to be
# looked over (killboard/entities/backlog.py `reindex`).
REINDEX_THROUGH = "participants.reindex_through_seq"

# Applied in order; PRAGMA user_version records how many have run.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE inbox (
        killmail_id INTEGER PRIMARY KEY,
        payload BLOB NOT NULL,          -- JSON of the accepted submission, before processing
        source TEXT NOT NULL,
        live INTEGER NOT NULL DEFAULT 1, -- 0: bulk import, stored without a live broadcast
        received_at REAL NOT NULL
    );
    CREATE TABLE kills (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: clients resume from it
        killmail_id INTEGER NOT NULL UNIQUE,
        killmail_hash TEXT NOT NULL,
        kill_time INTEGER NOT NULL,             -- unix seconds, UTC
        system_id INTEGER NOT NULL,
        total_value REAL NOT NULL,
        stored_at REAL NOT NULL,
        body BLOB NOT NULL                      -- zlib(JSON of the enriched killmail)
    );
    CREATE INDEX kills_kill_time ON kills (kill_time);
    CREATE TABLE names (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        category TEXT NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # ESI: market prices (refreshed daily) and kills stored before their player names were known.
    """
    CREATE TABLE prices (
        type_id INTEGER PRIMARY KEY,
        average REAL,
        adjusted REAL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE names_pending (killmail_id INTEGER PRIMARY KEY, since REAL NOT NULL);
    """,
    # 3: compact kills. `body` holds the source document deflated with a preset dictionary
    # (codec 1); rows of schema 1 keep codec 0 and stay readable. Dictionaries live in the
    # database so a backup is readable by any later version.
    """
    CREATE TABLE dictionaries (id INTEGER PRIMARY KEY, data BLOB NOT NULL);
    ALTER TABLE kills ADD COLUMN codec INTEGER NOT NULL DEFAULT 0;
    """,
    # 4: webhooks (killboard/webhooks): the last seq each webhook delivered, by its name.
    """
    CREATE TABLE webhook_cursors (name TEXT PRIMARY KEY, seq INTEGER NOT NULL, updated_at REAL NOT NULL);
    """,
    # 5: /health counts the inbox on every call. Without an index count(*) walks the table
    # itself, a page or more per waiting kill (35-80 ms with 20,000 waiting during an import);
    # this index is a few bytes a row, so the count reads ~1/300 of that.
    """
    CREATE INDEX inbox_live ON inbox (live);
    """,
    # 6: the participant index (storage/participants.py), read by battles and entity pages. Kills
    # stored before it are indexed in the background (index_backlog) up to the seq noted here.
    participants.SCHEMA
    + f"""
    INSERT INTO state (key, value)
        SELECT '{INDEX_BACKLOG}', CAST(max(seq) AS TEXT) FROM kills HAVING max(seq) IS NOT NULL
        ON CONFLICT (key) DO UPDATE SET value = excluded.value;
    """,
    # 7: battles (killboard/battles), kept beside the kills in their transaction.
    battle_tables.SCHEMA,
    # 8: entity figures (killboard/entities/figures.py), kept beside the kills in their transaction.
    # Kills already in the participant index are counted in by the entities' backlog up to the seq
    # noted here; those still waiting for the index are counted as the index's backlog reaches them.
    FIGURES_SCHEMA
    + f"""
    INSERT INTO state (key, value)
        SELECT '{FIGURES_BACKLOG}', CAST(max(seq) AS TEXT) FROM kills HAVING max(seq) IS NOT NULL
        ON CONFLICT (key) DO UPDATE SET value = excluded.value;
    """,
    # 9: enrichment no longer puts an attacker's weapon in as their ship when ESI gave none (a
    # "250mm Railgun II" among the ships flown). Kills indexed before are looked over, and those
    # whose pilots name a type that is no hull indexed again, up to the seq noted here.
    f"""
    INSERT INTO state (key, value)
        SELECT '{REINDEX_THROUGH}', CAST(max(seq) AS TEXT) FROM participants HAVING max(seq) IS NOT NULL
        ON CONFLICT (key) DO UPDATE SET value = excluded.value;
    """,
]

# Keys in `state` that record what retention removed, so reads can say "pruned" instead of "absent".
PRUNED_SEQ = "retention.pruned_through_seq"
PRUNED_KILLMAIL_ID = "retention.pruned_max_killmail_id"


async def migrate(db: aiosqlite.Connection) -> None:
    async with db.execute("PRAGMA user_version") as cur:
        row = await cur.fetchone()
    version = int(row[0]) if row else 0
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        # executescript commits first; the version bump rides in the same script so a crash
        # between the two cannot leave a migration applied but unrecorded.
        await db.executescript(f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
        log.info("database migrated to schema version %d", number)


async def ensure_incremental_vacuum(db: aiosqlite.Connection) -> None:
    """Databases made before auto_vacuum was set need one VACUUM to switch (it rewrites the file)."""
    async with db.execute("PRAGMA auto_vacuum") as cur:
        row = await cur.fetchone()
    if row and int(row[0]) == 2:
        return
    log.info("switching the database to incremental auto-vacuum (a one-off VACUUM; may take a while)")
    await db.execute("PRAGMA auto_vacuum=INCREMENTAL")
    await db.execute("VACUUM")
