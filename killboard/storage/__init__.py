"""SQLite storage: kills, inbox, names, upkeep and backups (entry: `store.Store`)."""
