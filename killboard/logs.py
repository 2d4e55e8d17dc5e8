"""Log setup: plain lines for people, or JSON lines (KILLBOARD_LOG_FORMAT=json) for log shippers."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import ujson

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message; `exc` only when a
    stack trace was asked for (an unexpected failure)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return ujson.dumps(entry, ensure_ascii=False, escape_forward_slashes=False)


def setup(env: Mapping[str, str]) -> None:
    """Root logger from KILLBOARD_LOG_LEVEL (default INFO) and KILLBOARD_LOG_FORMAT (plain|json)."""
    level = env.get("KILLBOARD_LOG_LEVEL", "INFO").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise SystemExit(f"KILLBOARD_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {level!r}")
    fmt = env.get("KILLBOARD_LOG_FORMAT", "plain").lower()
    if fmt not in ("plain", "json"):
        raise SystemExit(f"KILLBOARD_LOG_FORMAT must be plain or json, got {fmt!r}")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(PLAIN_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
