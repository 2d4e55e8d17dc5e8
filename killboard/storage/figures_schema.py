"""The tables of the entity figures (killboard/entities/figures.py), for store.MIGRATIONS.

Here and not in entities/: the store applies the migrations and imports no later stage.
"""

# State key: kills up to this seq were in the participant index before the figures existed and
# are counted in by the entities' backlog (killboard/entities/backlog.py), newest first.
FIGURES_BACKLOG = "entities.backlog_through_seq"

# WITHOUT ROWID: the key is the row; small counts take one byte.
SCHEMA = """
CREATE TABLE entity_months (
    kind INTEGER NOT NULL,        -- participants.Kind
    id INTEGER NOT NULL,
    month INTEGER NOT NULL,       -- year * 12 + month - 1 (UTC)
    kills INTEGER NOT NULL,
    losses INTEGER NOT NULL,
    solo INTEGER NOT NULL,
    isk_destroyed INTEGER NOT NULL, -- whole ISK: adding and taking back stay exact
    isk_lost INTEGER NOT NULL,
    PRIMARY KEY (kind, id, month)
) WITHOUT ROWID;
CREATE TABLE entity_tops (
    kind INTEGER NOT NULL,
    id INTEGER NOT NULL,
    what INTEGER NOT NULL,        -- figures.FLOWN, LOST, SYSTEM, OPPONENT
    other INTEGER NOT NULL,       -- a ship type, a system, an opponent's id
    n INTEGER NOT NULL,
    PRIMARY KEY (kind, id, what, other)
) WITHOUT ROWID;
"""
