"""The battles' tables (migration 7): battles and which battle each kill belongs to.

Written by killboard/battles in the kill's own transaction (store.writers), pruned with the
kills (store.pruners); kept here, not in killboard/battles, so store.py can migrate them.
"""

SCHEMA = """
CREATE TABLE battles (
    battle_id INTEGER PRIMARY KEY,
    merged_into INTEGER,              -- NULL, or the battle this one grew into: its id redirects there
    system_ids TEXT NOT NULL,         -- JSON array, first system first
    constellation_id INTEGER NOT NULL,
    region_id INTEGER NOT NULL,
    start_time INTEGER NOT NULL,      -- unix seconds of its first and last kill
    end_time INTEGER NOT NULL,
    kill_count INTEGER NOT NULL,
    isk_destroyed REAL NOT NULL,      -- the sum of its kills' total_value
    last_seq INTEGER NOT NULL         -- the newest kill (by seq) that changed it: `since` for frames
);
CREATE INDEX battles_start ON battles (start_time, battle_id);
CREATE INDEX battles_end ON battles (end_time);
CREATE TABLE battle_kills (
    seq INTEGER PRIMARY KEY,          -- kills.seq; a kill is in one battle at most
    battle_id INTEGER NOT NULL
);
CREATE INDEX battle_kills_battle ON battle_kills (battle_id);
-- Kills stored before this migration are in no battle until `python app.py battles rebuild`.
INSERT INTO state (key, value)
    SELECT 'battles.rebuild_needed', '1' WHERE EXISTS (SELECT 1 FROM kills)
    ON CONFLICT (key) DO UPDATE SET value = excluded.value;
"""
REBUILD_NEEDED = "battles.rebuild_needed"
