"""When to retry a request, and how long to wait first."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

# 408: the body never arrived; 429/503: shed or unavailable, nothing written (docs/guarantees.md).
RETRYABLE = frozenset({408, 429, 503})


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Return the seconds a `Retry-After` header asks for (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def backoff_delay(
    attempt: int,
    base_s: float,
    cap_s: float,
    retry_after_s: float | None = None,
    rand: random.Random | None = None,
) -> float:
    """Return the wait before retry `attempt` (1, 2, ...): full jitter, never below `Retry-After`."""
    ceiling = min(cap_s, base_s * 2 ** min(attempt - 1, 62))
    # Full jitter (AWS architecture blog): spreads a fleet's retries instead of synchronising them.
    delay = (rand or random).uniform(0.0, ceiling)
    return max(delay, retry_after_s or 0.0)
