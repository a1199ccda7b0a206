"""`GET /decisions/histogram`: matching decisions counted per time bucket and outcome, for the console's chart."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime, timedelta

from aiohttp import web

from cavra_ingest.http.guards import cancel_on_disconnect
from cavra_ingest.http.keys import SETTINGS_KEY, STORE_KEY
from cavra_ingest.http.middleware import json_reply
from cavra_ingest.http.replies import Histogram, HistogramBucket
from cavra_ingest.http.routes.reads import DECISION_FILTERS, bad_query, parse_query, stored_values

# Intervals a client may ask for, and the ladder `auto` climbs: (name, seconds).
INTERVALS = (
    ("1m", 60),
    ("5m", 300),
    ("10m", 600),
    ("15m", 900),
    ("30m", 1800),
    ("1h", 3600),
    ("3h", 3 * 3600),
    ("6h", 6 * 3600),
    ("12h", 12 * 3600),
    ("1d", 86400),
    ("7d", 7 * 86400),
    ("30d", 30 * 86400),
)
SECONDS = dict(INTERVALS)
AUTO_BUCKETS = 60
# From this window on, `auto` picks whole days (at least 14 buckets; the ladder would give 6h or 12h): day
# buckets over keyed filters are read from the SQLite store's per-day counts in under a millisecond, where
# a scan costs ~0.6 µs per matching decision (docs/search.md).
AUTO_DAYS_FROM = 14 * 86400
# Stored times are SPEC's UTC text (`2026-03-01T10:05:00.000000+00:00`): the store groups by a prefix of it
# (minute, hour or day), and the buckets are folded from those here.
MINUTE, HOUR, DAY = 16, 13, 10


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def unit_of(seconds: int) -> tuple[int, str]:
    """Return the timestamp prefix length to group by, and the format that parses it back."""
    if seconds % 86400 == 0:
        return DAY, "%Y-%m-%d"
    if seconds % 3600 == 0:
        return HOUR, "%Y-%m-%dT%H"
    return MINUTE, "%Y-%m-%dT%H:%M"


def auto_interval(start: datetime, end: datetime) -> tuple[str, int]:
    """Pick the finest interval that gives at most about AUTO_BUCKETS buckets over the window."""
    window = max((end - start).total_seconds(), 1.0)
    for name, seconds in INTERVALS:
        if seconds < 86400 and window >= AUTO_DAYS_FROM:
            continue
        if window / seconds <= AUTO_BUCKETS:
            return name, seconds
    # Beyond the ladder (years of data): whole days, still about AUTO_BUCKETS of them.
    days = math.ceil(window / AUTO_BUCKETS / 86400)
    return f"{days}d", days * 86400


def floor(moment: datetime, seconds: int) -> datetime:
    """Align to the interval, counted from the Unix epoch (days start at 00:00 UTC)."""
    epoch = int(moment.timestamp())
    return datetime.fromtimestamp(epoch - epoch % seconds, UTC)


def stamp(start: datetime, seconds: int) -> str:
    """Return `start` + `seconds` as RFC 3339 text; the end of time where that is past year 9999."""
    try:
        moment = start + timedelta(seconds=seconds)
    except OverflowError:
        moment = datetime.max.replace(tzinfo=UTC)
    return moment.isoformat(timespec="seconds")


@cancel_on_disconnect
async def decision_histogram(request: web.Request) -> web.Response:
    """Count matches per bucket and outcome; the window is `since`..`until`, or the matches' own span."""
    held = await stored_values(request, "decisions", DECISION_FILTERS)
    query = parse_query(
        request, DECISION_FILTERS, scope="histogram", extra=("interval",), paging=False, held=held, search=True
    )
    store = request.app[STORE_KEY]
    settings = request.app[SETTINGS_KEY]
    interval = request.query.get("interval", "") or "auto"
    if interval != "auto" and interval not in SECONDS:
        raise bad_query("interval", f"interval must be auto or one of {', '.join(SECONDS)}, not {interval!r}")
    first = last = None
    if query.since is None or query.until is None:
        first, last = await store.time_bounds(query)
    if first is None and (query.since is None or query.until is None):
        # Nothing matches and the window is open: no buckets to draw.
        name, seconds = (interval, SECONDS[interval]) if interval != "auto" else INTERVALS[0]
        return json_reply(Histogram(name, seconds, query.since, query.until, 0, []))
    start = parse_time(query.since) if query.since is not None else parse_time(first or "")
    # `until` is exclusive; the latest match must fall inside the last bucket.
    end = parse_time(query.until) if query.until is not None else parse_time(last or "") + timedelta(microseconds=1)
    if interval == "auto":
        interval, seconds = auto_interval(start, end)
    else:
        seconds = SECONDS[interval]
    try:
        first_bucket = floor(start, seconds)
    except (ValueError, OverflowError):
        raise bad_query("since", "since is too early to count buckets from") from None
    count = max(math.ceil((end - first_bucket).total_seconds() / seconds), 1)
    if count > settings.limits.histogram_max_buckets:
        raise bad_query(
            "interval",
            f"{interval} gives {count} buckets over this window, more than {settings.limits.histogram_max_buckets}:"
            " narrow since/until or choose a longer interval",
        )
    unit_chars, unit_format = unit_of(seconds)
    rows = await store.histogram(dataclasses.replace(query, limit=0, offset=0), unit_chars)
    counts: list[dict[str, int]] = [{} for _ in range(count)]
    for prefix, outcome, n in rows:
        try:
            moment = datetime.strptime(prefix, unit_format).replace(tzinfo=UTC)
        except ValueError:
            continue  # a time not in SPEC's form (CAVRA may write anything): it has no bucket
        index = int((floor(moment, seconds) - first_bucket).total_seconds()) // seconds
        if 0 <= index < count:
            counts[index][outcome] = counts[index].get(outcome, 0) + n
    buckets = [
        HistogramBucket(
            stamp(first_bucket, i * seconds),
            stamp(first_bucket, (i + 1) * seconds),
            sum(c.values()),
            dict(sorted(c.items())),
        )
        for i, c in enumerate(counts)
    ]
    total = sum(b.total for b in buckets)
    return json_reply(Histogram(interval, seconds, query.since, query.until, total, buckets))
