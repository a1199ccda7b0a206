"""The statements that read the counts (SQLite): totals, facets, day histograms and time bounds, each the
counts' rows plus scans of what they do not hold, and the merging of their rows."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

from cavra_ingest.store.base import ListQuery
from cavra_ingest.store.dimensions import ALL_TIME, ANY_TENANT, DAY, FACET_FIELDS, ROLLED, TOTAL_FIELD
from cavra_ingest.store.sqlite.countplan import (
    Plan,
    _arms,
    _given,
    _in,
    _keys,
    _parse,
    _scan_where,
    _scans,
    _total_field,
    decode,
    encode,
    pair_key,
    plan,
)


def total_statements(query: ListQuery, field: str, counted: int) -> list[tuple[str, list[Any]]]:
    """Statements whose single values add up to the query's total."""
    p = plan(query.since, query.until)
    statements = []
    # Without an outcome filter, the sums over the outcomes: one row per value (and tenant).
    summed = (field or TOTAL_FIELD) in ROLLED and "decision" not in dict(query.equals)
    for arm, params in _arms(p, query, summed):
        where, values = f"field = ? AND {arm}", [field or TOTAL_FIELD, *params]
        if field:
            wanted = dict(query.equals)[field]
            where += f" AND value IN {_in(wanted)}"
            values.extend(encode(v) for v in wanted)
        statements.append((f"SELECT ifnull(sum(n), 0) FROM activity_decision_counts WHERE {where}", values))
    statements += [
        (f"SELECT {sign} * count(*) FROM activity_decisions{w}", ps) for w, ps, sign in _scans(query, p, counted)
    ]
    return statements


# A partial day's agents and repositories are counted through their (field, timestamp) indexes (013), one
# seek per value the day's count rows hold, in index order: no sort of the edge's rows. Grouping a half day
# of 41 k decisions (5 M in 60 days) by these two fields was ~40 % of the facets' time (docs/performance.md).
SOUGHT = {"agent_id": "idx_activity_decisions_agent", "repository": "idx_activity_decisions_repository"}
# A seek per value the day holds costs about what grouping two of the edge's decisions does (measured with
# 2,000 agents and 3,000 repositories a day): a shorter edge is grouped, as its other fields are.
SEEK_FROM = timedelta(hours=6)


def _edge_statements(since: str, until: str, sign: int, counted: int) -> list[tuple[str, list[Any]]]:
    """Facet rows of the counted decisions in [since, until), one statement per field (no filter but time)."""
    # Every counted decision of the day is in the day's count rows: their values are all the edge can hold.
    day = since[:DAY]
    sought = SOUGHT if _parse(until) - _parse(since) >= SEEK_FROM else {}  # type: ignore[operator]
    statements: list[tuple[str, list[Any]]] = []
    for name in FACET_FIELDS:
        time = "timestamp >= ? AND timestamp < ? AND rowid <= ?"
        if name in sought:
            table = f"activity_decisions INDEXED BY {sought[name]}"
            values = (
                f"SELECT substr(value, 2) FROM activity_decision_counts WHERE span = {DAY} AND field = ?"
                " AND bucket = ? AND value != ''"
            )
            sql = (
                f"SELECT '{name}', '=' || {name}, {sign} * count(*) FROM {table}"
                f" WHERE {name} IN ({values}) AND {time} GROUP BY {name}"
                f" UNION ALL SELECT '{name}', '', {sign} * count(*) FROM {table} WHERE {name} IS NULL AND {time}"
            )
            statements.append((sql, [name, day, since, until, counted, since, until, counted]))
        else:
            sql = (
                f"SELECT '{name}', ifnull('=' || {name}, ''), {sign} * count(*) FROM activity_decisions"
                f" WHERE {time} GROUP BY {name}"
            )
            statements.append((sql, [since, until, counted]))
    return statements


def long_edges(query: ListQuery) -> bool:
    """Whether a window's facets read a partial day of SEEK_FROM or more: worth a second reader."""
    if query.equals:
        return False
    return any(_parse(until) - _parse(since) >= SEEK_FROM for since, until, _ in plan(query.since, query.until).scans)  # type: ignore[operator]


def facet_scans(query: ListQuery, counted: int) -> list[tuple[str, list[Any]]]:
    """Statements yielding (field, value, count) rows of the decisions the counts do not hold (or hold too many).

    A window's partial days with no other filter give one statement per field (which the store may run on
    two readers at once); with filters, or for the rows not counted yet, one statement reads the rows once.
    """
    picked = ", ".join(FACET_FIELDS)
    p = plan(query.since, query.until)
    statements = []
    if not query.equals:
        for since, until, sign in p.scans:
            assert since is not None and until is not None  # partial days have both edges
            statements += _edge_statements(since, until, sign, counted)
        p = Plan(p.buckets, [])
    for w, ps, sign in _scans(query, p, counted):
        grouped = " UNION ALL ".join(
            f"SELECT '{name}', ifnull('=' || {name}, ''), {sign} * count(*) FROM rows GROUP BY {name}"
            for name in FACET_FIELDS
        )
        statements.append((f"WITH rows AS MATERIALIZED (SELECT {picked} FROM activity_decisions{w}) {grouped}", ps))
    return statements


def facet_counts(query: ListQuery, top: int | None) -> list[tuple[str, list[Any]]]:
    """Statements yielding (field, value, count) rows from the counts; with `top`, only each field's top.

    `top` may be given only when nothing else adds to the counts (no scanned rows): then the top values of
    the counts are the answer's. The outcomes are never cut, since the total is their sum. One statement
    per field: all-time rows of one field are read in value order, so they are summed without a sort.
    With a paired filter, the rows are its values' pair rows, and its own facet is its values' totals.
    Without an outcome filter, a field's all-time rows are its sums over the outcomes; for one tenant key
    (any tenant, or one tenant) they are one row per value, read in count order from 019's partial index.
    """
    p = plan(query.since, query.until)
    given = _given(query)
    equals = dict(query.equals)
    statements = []
    for name in FACET_FIELDS:
        summed = name in ROLLED and given is None and "decision" not in equals
        arms = _arms(p, query, summed)
        if summed and p.buckets == [(ALL_TIME, None, None)] and len(equals.get("tenant_id", (ANY_TENANT,))) == 1:
            ((arm, values),) = arms
            # In count order even without `top`: the index holds the sums alone, the key interleaves them with
            # the per-outcome rows.
            sql = (
                f"SELECT '{name}', value, n FROM activity_decision_counts WHERE field = ? AND {arm} AND n != 0"
                " ORDER BY n DESC, value"
            )
            if top is not None:
                sql += " LIMIT ?"
            statements.append((sql, [name, *values, *([] if top is None else [top])]))
            continue
        keys = _keys(query, TOTAL_FIELD if name == "decision" else name)
        if name == "decision":
            column = "'=' || decision"
        elif given is not None and name == given[0]:
            # The total keys differ only in the given value, after a prefix of one length.
            column, keys = (
                f"'=' || substr(field, {len(pair_key(_total_field(name), name, '')) + 1})",
                _keys(query, TOTAL_FIELD),
            )
        else:
            column = "value"
        where = f"field IN {_in(keys)}"
        if len(arms) == 1:
            arm, values = arms[0]
            inner = (
                f"SELECT {column} AS v, sum(n) AS total FROM activity_decision_counts"
                f" WHERE {where} AND {arm} GROUP BY {column}"
            )
            params: list[Any] = [*keys, *values]
        else:
            parts = [f"SELECT {column} AS v, n FROM activity_decision_counts WHERE {where} AND {a}" for a, _ in arms]
            rows = " UNION ALL ".join(parts) or "SELECT '' AS v, 0 AS n WHERE 0"
            inner = f"SELECT v, sum(n) AS total FROM ({rows}) GROUP BY v"
            params = [v for _, values in arms for v in (*keys, *values)]
        sql = f"SELECT '{name}', v, total FROM ({inner}) WHERE total != 0"
        if top is not None and name != "decision":
            # Ties as facets_from_rows ranks them: by value ascending, NULL ('') first.
            sql += " ORDER BY total DESC, v LIMIT ?"
            params.append(top)
        statements.append((sql, params))
    return statements


def histogram_statements(query: ListQuery, counted: int) -> list[tuple[str, list[Any]]]:
    """Statements yielding (day, outcome, count) rows: whole days from the counts, the rest scanned."""
    p = plan(query.since, query.until)
    if p.buckets == [(ALL_TIME, None, None)]:
        # All time, but as its days: every day bucket of every tenant.
        p = Plan([(DAY, None, None)], [])
    keys = _keys(query, TOTAL_FIELD)
    statements = [
        (
            f"SELECT bucket, decision, sum(n) FROM activity_decision_counts WHERE field IN {_in(keys)} AND {arm}"
            " GROUP BY 1, 2",
            [*keys, *params],
        )
        for arm, params in _arms(p, query)
    ]
    statements += [
        (
            f"SELECT substr(timestamp, 1, {DAY}), decision, {sign} * count(*) FROM activity_decisions{w} GROUP BY 1, 2",
            ps,
        )
        for w, ps, sign in _scans(query, p, counted)
    ]
    return statements


def bounds_statements(query: ListQuery, counted: int) -> list[tuple[str, list[Any]]]:
    """Statements yielding (earliest, latest) rows of an all-time query, reading two days and the uncounted rows."""
    # The first and last counted days come from the counts; only those two days are read, walking the time
    # index from the day's edge to the first match. Rows not counted yet are read by rowid.
    ((arm, params),) = _arms(Plan([(DAY, None, None)], []), query)
    keys = _keys(query, TOTAL_FIELD)
    where, values = _scan_where(query, None, None)
    filters = where.removeprefix(" WHERE ")
    # Every time with the day's prefix lies in [day, day || the highest code point).
    edge = (
        "(SELECT timestamp FROM activity_decisions WHERE timestamp >= d.{0} AND timestamp < d.{0} || char(1114111)"
        " AND {1} ORDER BY timestamp {2} LIMIT 1)"
    )
    days = (
        "SELECT min(bucket) AS lo, max(bucket) AS hi FROM activity_decision_counts"
        f" WHERE field IN {_in(keys)} AND {arm} AND n > 0"
    )
    sql = f"SELECT {edge.format('lo', filters, 'ASC')}, {edge.format('hi', filters, 'DESC')} FROM ({days}) AS d"
    unseen, unseen_values = _scan_where(query, None, None, above=counted)
    return [
        (sql, [*values, *values, *keys, *params]),
        (f"SELECT min(timestamp), max(timestamp) FROM activity_decisions{unseen}", unseen_values),
    ]


def merge_histogram_rows(rows: Iterable[Sequence[Any]]) -> list[tuple[str, str, int]]:
    """Sum (day, outcome, count) rows from the counts and the scans; drop the zeros deletions leave."""
    sums: dict[tuple[str, str], int] = {}
    for day, outcome, n in rows:
        sums[(day, outcome)] = sums.get((day, outcome), 0) + n
    return [(day, outcome, n) for (day, outcome), n in sums.items() if n]


def merge_facet_rows(rows: Iterable[Sequence[Any]]) -> list[tuple[str, str | None, int]]:
    """Sum (field, encoded value, count) rows into facets_from_rows' (field, value, count)."""
    sums: dict[tuple[str, str], int] = {}
    for name, key, count in rows:
        sums[(name, key)] = sums.get((name, key), 0) + count
    return [(name, decode(key), count) for (name, key), count in sums.items() if count]


def together(statements: list[tuple[str, list[Any]]]) -> list[tuple[str, list[Any]]]:
    """Join statements yielding rows of the same shape into one: one trip to the reader's thread, not one each."""
    if len(statements) < 2:
        return statements
    sql = " UNION ALL ".join(f"SELECT * FROM ({sql})" for sql, _ in statements)
    return [(sql, [param for _, params in statements for param in params])]
