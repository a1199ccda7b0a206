"""How a count read is planned (SQLite): a window as day buckets and partial days, the counts' key ranges
and the scans of the decisions the counts do not hold (store/sqlite/counts.py has the whole account)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from cavra_ingest.store.base import ListQuery
from cavra_ingest.store.dimensions import (
    ALL_TIME,
    ANY_OUTCOME,
    ANY_TENANT,
    COUNTED_FIELDS,
    DAY,
    KEYED,
    PAIRED,
    TOTAL_FIELD,
)

ONE_DAY = timedelta(days=1)


def encode(value: str | None) -> str:
    """Key a value: '' for NULL, '=' and the value otherwise."""
    return "" if value is None else "=" + value


def decode(key: str) -> str | None:
    return None if key == "" else key[1:]


@dataclasses.dataclass(frozen=True)
class Plan:
    """How one query is answered: bucket ranges in the counts, time ranges of decisions scanned to add
    (sign 1) or to take away (sign -1: the rest of a day counted whole)."""

    buckets: list[tuple[int, str | None, str | None]]
    scans: list[tuple[str | None, str | None, int]]


def _parse(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text).astimezone(UTC)


def _text(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds")


def _floor(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def _mostly(start: datetime, stop: datetime) -> bool:
    """Whether [start, stop), inside one day, is more than half of it: then its day minus the rest is cheaper."""
    return (stop - start) * 2 > ONE_DAY


def plan(since: str | None, until: str | None) -> Plan:
    """Split `[since, until)` into day buckets and the partial days at its edges.

    A partial day is scanned, or, when it is more than half its day, the day is counted whole and the
    rest of it scanned and taken away: no edge scans more than half a day.
    """
    if since is None and until is None:
        return Plan([(ALL_TIME, None, None)], [])
    lo, hi = _parse(since), _parse(until)
    if lo is not None and hi is not None and lo >= hi:
        return Plan([], [])
    scans: list[tuple[str | None, str | None, int]] = []

    def edge(start: datetime, stop: datetime) -> tuple[datetime, datetime] | None:
        """Cover [start, stop) inside one day; return the day to count whole, if that is the cheaper way."""
        day = _floor(start)
        if not _mostly(start, stop):
            scans.append((_text(start), _text(stop), 1))
            return None
        if start > day:
            scans.append((_text(day), _text(start), -1))
        if stop < day + ONE_DAY:
            scans.append((_text(stop), _text(day + ONE_DAY), -1))
        return day, day + ONE_DAY

    first = None if lo is None else (lo if _floor(lo) == lo else _floor(lo) + ONE_DAY)
    end = None if hi is None else _floor(hi)
    if first is not None and end is not None and first > end:
        # Inside one day.
        assert lo is not None and hi is not None
        whole = edge(lo, hi)
        return Plan([] if whole is None else [(DAY, _text(whole[0])[:DAY], _text(whole[1])[:DAY])], scans)
    if lo is not None and first is not None and lo < first:
        whole = edge(lo, first)
        first = first if whole is None else whole[0]
    if hi is not None and end is not None and end < hi:
        whole = edge(end, hi)
        end = end if whole is None else whole[1]
    buckets: list[tuple[int, str | None, str | None]] = []
    if first is None or end is None or first < end:
        buckets.append((DAY, None if first is None else _text(first)[:DAY], None if end is None else _text(end)[:DAY]))
    return Plan(buckets, scans)


def _given(query: ListQuery) -> tuple[str, tuple[str, ...]] | None:
    """The paired filter of a query the counts answer, with its values."""
    for name, values in query.equals:
        if name in PAIRED:
            return name, values
    return None


def servable(query: ListQuery, *, facets: bool) -> str | None:
    """Say which counted field answers this query ('' for none needed), or None if counts cannot.

    For facets over all time the field may be a paired one, whose filter the pair rows answer (the
    histogram and time bounds, which read day rows, take only ''); for totals, any counted field.
    """
    if query.min_blocked is not None or query.after is not None or query.terms or query.prefixes:
        # Counts are kept per exact value: a search or a prefix must read the rows.
        return None
    if ANY_OUTCOME in dict(query.equals).get("decision", ()):
        # The outcome the sums are kept under: asked for literally, it matches no decision the rows hold.
        return None
    other = [name for name, _ in query.equals if name not in KEYED]
    if not other:
        return ""
    if len(other) > 1 or other[0] not in (PAIRED if facets else COUNTED_FIELDS):
        return None
    if facets and (query.since is not None or query.until is not None):
        # Pair rows are all-time rows only.
        return None
    return other[0]


def pair_key(field: str, given: str, value: str) -> str:
    """The `field` key of `field`'s counts among decisions whose `given` is `value`."""
    return f"{field}|{given}={value}"


def _total_field(given: str) -> str:
    # Every decision is counted once in every field, so any field's rows add up to the total.
    return "action_type" if given == TOTAL_FIELD else TOTAL_FIELD


def _keys(query: ListQuery, field: str) -> list[str]:
    """The `field` keys whose rows count `field` among the query's decisions (TOTAL_FIELD: the total)."""
    given = _given(query)
    if given is None:
        return [field]
    name, values = given
    return [pair_key(_total_field(name) if field == TOTAL_FIELD else field, name, v) for v in values]


def _in(values: Sequence[Any]) -> str:
    return f"({', '.join('?' * len(values))})"


def _arms(p: Plan, query: ListQuery, summed: bool = False) -> list[tuple[str, list[Any]]]:
    """One condition per bucket range, each a range of the counts' primary key once `field` is fixed.

    `summed`: all-time rows of a ROLLED field without an outcome filter are read as their sums over the
    outcomes; otherwise those sums are left out, since the per-outcome rows already hold them.
    """
    given = dict(query.equals)
    arms = []
    for span, first, end in p.buckets:
        # `bucket = ''` for all time: with it the key is sought down to the tenant, not scanned past it. A
        # literal span, so that the partial index of the sums (019) is seen to serve the query.
        arm: list[str] = ["span = ?"] if span else [f"span = {ALL_TIME}", "bucket = ''"]
        params: list[Any] = [span] if span else []
        if first is not None:
            arm.append("bucket >= ?")
            params.append(first)
        if end is not None:
            arm.append("bucket < ?")
            params.append(end)
        if "tenant_id" in given:
            arm.append(f"tenant IN {_in(given['tenant_id'])}")
            params.extend(encode(v) for v in given["tenant_id"])
        elif span == ALL_TIME:
            arm.append("tenant = ?")
            params.append(ANY_TENANT)
        if "decision" in given:
            arm.append(f"decision IN {_in(given['decision'])}")
            params.extend(given["decision"])
        elif span == ALL_TIME:
            arm.append(f"decision {'=' if summed else '!='} '{ANY_OUTCOME}'")
        arms.append((" AND ".join(arm), params))
    return arms


def _scan_where(
    query: ListQuery, since: str | None, until: str | None, *, above: int | None = None, upto: int | None = None
) -> tuple[str, list[Any]]:
    """Build the WHERE of a scan: a time range of counted rows, or the rows above the watermark."""
    # Unary + on the filters (and, for unseen rows, on the time): only the time range, or the rowid range,
    # may drive the scan, never some filter's index over all time.
    clauses: list[str] = ["1"]
    params: list[Any] = []
    for name, values in query.equals:
        clauses.append(f"+{name} IN {_in(values)}")
        params.extend(values)
    plus = "+" if above is not None else ""
    if since is not None:
        clauses.append(f"{plus}timestamp >= ?")
        params.append(since)
    if until is not None:
        clauses.append(f"{plus}timestamp < ?")
        params.append(until)
    if above is not None:
        clauses.append("rowid > ?")
        params.append(above)
    if upto is not None:
        clauses.append("rowid <= ?")
        params.append(upto)
    return " WHERE " + " AND ".join(clauses), params


def _scans(query: ListQuery, p: Plan, counted: int) -> list[tuple[str, list[Any], int]]:
    # Counted rows in the partial days; then rows not counted yet, wherever they fall in the window.
    wheres = [(*_scan_where(query, since, until, upto=counted), sign) for since, until, sign in p.scans]
    wheres.append((*_scan_where(query, query.since, query.until, above=counted), 1))
    return wheres
