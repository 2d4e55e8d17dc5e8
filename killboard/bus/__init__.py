"""Past one process: a Redis Stream carries every stored kill from the writer to edge processes.

Imported only when KILLBOARD_REDIS_URL is set (or by `python app.py edge`): the embedded default
never loads redis.
"""
