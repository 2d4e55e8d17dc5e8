"""killboard: a live EVE Online killmail feed server."""
