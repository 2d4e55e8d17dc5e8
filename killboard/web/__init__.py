"""The web front: pages, the JSON API, the socket endpoint, app keys (entry: routes in killboard/server.py)."""
