"""killboard: a live EVE Online killmail feed server.

A kill moves through the stages in this order, and each stage imports only from the stages
before it (tests/test_layers.py holds the code to this):

- `config`, `logs`, `metrics`, `auth`, `numbers`: settings, observability, and the reading of
  clients' integers, which every stage uses;
- `kill/`: what a kill is: validation, static data, prices, enrichment, its match keys and frames;
- `storage/`: SQLite: the kills, the inbox, names, maintenance, backups;
- `ingest/`: what comes in: zKillboard's feed, ESI, imports, and the worker that stores kills;
- `live/`: the hub that delivers stored kills to sockets, replay, permessage-deflate;
- `webhooks/`: Discord and signed-JSON deliveries of stored kills;
- `battles/`, `entities/`: battles, and the figures, pages and name search of each entity;
- `web/`: the aiohttp front: pages, JSON API, the socket endpoint;
- `bus/`: Redis Streams between a writer and edge processes;
- `server`, `cli`: the app factory that wires the stages together, and the command line.
"""

__version__ = "0.3.0"

# "killboard" is this file: it imports nothing, so the base stage may read __version__ from it.
STAGES: tuple[frozenset[str], ...] = (
    frozenset({"killboard", "config", "logs", "metrics", "auth", "numbers"}),
    frozenset({"kill"}),
    frozenset({"storage"}),
    frozenset({"ingest"}),
    frozenset({"live"}),
    frozenset({"webhooks"}),
    frozenset({"battles", "entities"}),
    frozenset({"web"}),
    frozenset({"bus"}),
    frozenset({"server", "cli", "__main__"}),
)
