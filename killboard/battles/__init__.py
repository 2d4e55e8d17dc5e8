"""Battles: kills grouped into fights with sides as they are stored, and followed live.

Entry point: `service.Battles.start(store, static, hub)` (wired in server.py); detect.py segments
kills, sides.py finds who fought whom, summary.py counts each side, tables.py stores it beside
the kills, live.py serves the `battles` and `battle:<id>` channels.
"""
