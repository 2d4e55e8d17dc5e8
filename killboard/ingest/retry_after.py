"""An upstream's `Retry-After` header (RFC 9110 section 10.2.3): delay-seconds or an HTTP-date."""

from __future__ import annotations

import math
import time
from datetime import UTC
from email.utils import parsedate_to_datetime

# Never wait longer than this on one header's word: a wrong clock or a typo upstream must not
# stop the feed for a day.
MAX_RETRY_AFTER = 3600.0


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait (0 to MAX_RETRY_AFTER), or None when the header is absent or unreadable.

    `now` is the unix time an HTTP-date is counted from (default: the clock).
    """
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)  # RFC: an integer; "2.5" is taken too
    except ValueError:
        try:
            when = parsedate_to_datetime(text)  # "Wed, 21 Oct 2015 07:28:00 GMT"
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)  # HTTP-dates are GMT
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return min(MAX_RETRY_AFTER, max(0.0, seconds))
