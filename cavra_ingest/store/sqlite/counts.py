"""Decision counts per time bucket, tenant, outcome and field value (SQLite, migrations 013, 017 and 019).

Facets and totals over broad filters read these instead of the decisions: all time is one bucket, a
window is its whole days, and the partial days at its edges are read through the time index: a partial
day of more than half a day as its whole day less the rest, so no edge reads more than half a day (hour
buckets were measured: +20-30 µs of writer CPU per decision, and with thousands of agents and
repositories an hour holds about as many count rows as decisions, so they saved no reading).

Facets over all time filtered by a policy pack, a severity, an action type (017) or a workspace (020)
(any values) read pair rows: each facet field counted among the decisions of each value of those fields.
A rule's would outnumber the decisions (docs/performance.md): a rule's facets read its matches.

All-time rows are also kept summed over the outcomes (outcome ANY_OUTCOME, 019) for the facet fields:
a question without an outcome filter reads one row per value instead of one per outcome and value, and
its top values in count order from a partial index, without summing or sorting.

Decisions not folded yet (the writer's own until FOLD_ROWS of them wait, pair rows until PAIR_BATCH do,
and those CAVRA inserts into the file) have a rowid above `counted_rowid` (`paired_rowid` for the pair
rows): every read counts them from the table in the same snapshot, and the writer folds them in with a
later batch (or at open).
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from cavra_ingest.store.base import ListQuery
from cavra_ingest.store.dimensions import (
    ALL_TIME,
    ANY_OUTCOME,
    ANY_TENANT,
    COUNTED_FIELDS,
    DAY,
    FACET_FIELDS,
    KEYED,
    PAIR_FIELDS,
    PAIRED,
    ROLLED,
    TOTAL_FIELD,
    pairs,
)

ONE_DAY = timedelta(days=1)
# More unseen rows than this and a read runs on a heavy reader (its statement time limit applies): it counts
# them from the table, as it counts the few that wait between folds; it never waits for a fold.
READ_LAG_ROWS = 1000
# The writer folds new decisions into the counts once this many wait above the watermark, in the transaction
# of the batch that reaches it. Folding every batch cost ~30 µs of CPU and ~9 KiB of WAL per decision at
# 32-decision transactions (most count rows a small batch touches are its own); reads count the waiting
# rows from the table in their snapshot meanwhile (bench/storecost.py, docs/performance.md). Below
# READ_LAG_ROWS, so the writer's own waiting rows never send a read to a heavy reader.
FOLD_ROWS = 512
# A batch folds no more waiting rows than this in its own transaction: a larger backlog (a new or upgraded
# file, rows CAVRA inserted in bulk) is the background folder's, a step at a time, so no batch waits for it
# (5 M decisions took 2 min for the counts and 7.5 min for the pair rows, which kept a server from starting).
BATCH_FOLD_MAX = 20_000
# Rowids folded per transaction when catching up, so another writer (CAVRA) is never locked out long.
CATCH_UP_CHUNK = 200_000

# Each decision counts in its day, in all time under its tenant, and in all time under ANY_TENANT: with
# thousands of agents and ten tenants, summing all tenants' rows made unfiltered facets 400 ms at 5 M.
_TENANT = f"CASE WHEN s.rollup THEN '{ANY_TENANT}' ELSE ifnull('=' || d.tenant_id, '') END"
_FIELDS = " UNION ALL ".join(f"SELECT '{name}' AS field" for name in COUNTED_FIELDS)
_VALUE = (
    "CASE f.field "
    + " ".join(f"WHEN '{name}' THEN d.{name}" for name in COUNTED_FIELDS[:-1])
    + f" ELSE d.{COUNTED_FIELDS[-1]} END"
)
# Every decision with rowid in (?, ?] adds one to its key in each span and field: grouped once per day into
# a temporary table, which is added to the day buckets and, grouped again, to the all-time ones. Half the
# time of one cross join of the rows with the three spans, measured at 32 and at 512 rows.
DELTA = f"""
CREATE TEMP TABLE counts_delta AS
SELECT substr(d.timestamp, 1, {DAY}) AS bucket, ifnull('=' || d.tenant_id, '') AS tenant, d.decision AS decision,
       f.field AS field, ifnull('=' || {_VALUE}, '') AS value, count(*) AS n
FROM activity_decisions AS d, ({_FIELDS}) AS f
WHERE d.rowid > ? AND d.rowid <= ?
GROUP BY 1, 2, 3, 4, 5
"""
ADD_DELTA = (
    f"INSERT INTO activity_decision_counts (span, bucket, tenant, decision, field, value, n)"
    f" SELECT {DAY}, bucket, tenant, decision, field, value, n FROM counts_delta WHERE 1"
    " ON CONFLICT DO UPDATE SET n = n + excluded.n",
    f"INSERT INTO activity_decision_counts (span, bucket, tenant, decision, field, value, n)"
    f" SELECT {ALL_TIME}, '', tenant, decision, field, value, sum(n) FROM counts_delta GROUP BY 3, 4, 5, 6"
    " ON CONFLICT DO UPDATE SET n = n + excluded.n",
    f"INSERT INTO activity_decision_counts (span, bucket, tenant, decision, field, value, n)"
    f" SELECT {ALL_TIME}, '', '{ANY_TENANT}', decision, field, value, sum(n) FROM counts_delta GROUP BY 4, 5, 6"
    " ON CONFLICT DO UPDATE SET n = n + excluded.n",
    # The sums over the outcomes (019): per tenant and under any tenant, all time, the rolled fields only.
    f"INSERT INTO activity_decision_counts (span, bucket, tenant, decision, field, value, n)"
    f" SELECT {ALL_TIME}, '', tenant, '{ANY_OUTCOME}', field, value, sum(n) FROM counts_delta"
    f" WHERE field IN {ROLLED!r} GROUP BY 3, 5, 6"
    " ON CONFLICT DO UPDATE SET n = n + excluded.n",
    f"INSERT INTO activity_decision_counts (span, bucket, tenant, decision, field, value, n)"
    f" SELECT {ALL_TIME}, '', '{ANY_TENANT}', '{ANY_OUTCOME}', field, value, sum(n) FROM counts_delta"
    f" WHERE field IN {ROLLED!r} GROUP BY 5, 6"
    " ON CONFLICT DO UPDATE SET n = n + excluded.n",
    "DROP TABLE counts_delta",
)
STATE = "SELECT counted_rowid, (SELECT max(rowid) FROM activity_decisions) FROM activity_decision_counts_state"
SET_STATE = "UPDATE activity_decision_counts_state SET counted_rowid = ? WHERE id = 1"

# Pair rows (017): each facet field among the decisions of each value of a paired field, for all time
# (per tenant and any tenant, per outcome), keyed `field|given=value`. Per day they would cost each write
# about as much again as every other count row; a window with a paired filter reads its decisions.
# They have a watermark of their own and are folded only once PAIR_BATCH rows wait: grouped over 1,000
# rows they cost about a third of what 32-row batches paid (bench/wal.py), and reads count the few rows
# above the watermark from the table, as they do for the plain counts.
PAIR_BATCH = 1000
# More unseen rows than this and a pair read runs on a heavy reader (as READ_LAG_ROWS).
PAIR_READ_LAG = 10_000
# Rowids per pair fold when catching up: each adds 24 rows to sort (12 pairs, 2 tenant keys).
PAIR_CATCH_UP_CHUNK = 50_000
_PAIRS = " UNION ALL ".join(f"SELECT '{name}' AS field, '{given}' AS given" for name, given in pairs())
_PAIR_VALUE = (
    "CASE f.field "
    + " ".join(f"WHEN '{name}' THEN d.{name}" for name in PAIR_FIELDS[:-1])
    + f" ELSE d.{PAIR_FIELDS[-1]} END"
)
_GIVEN = (
    "CASE f.given " + " ".join(f"WHEN '{name}' THEN d.{name}" for name in PAIRED[:-1]) + f" ELSE d.{PAIRED[-1]} END"
)
# A decision without a tenant gets only the any-tenant row: no filter asks for the tenant NULL, so its own
# all-time row would never be read (a single-tenant deployment writes half the pair rows).
PAIR_FOLD = f"""
INSERT INTO activity_decision_counts (span, bucket, tenant, decision, field, value, n)
SELECT {ALL_TIME}, '', {_TENANT}, d.decision, f.field || '|' || f.given || '=' || {_GIVEN},
       ifnull('=' || {_PAIR_VALUE}, ''), count(*)
FROM activity_decisions AS d, (SELECT 0 AS rollup UNION ALL SELECT 1) AS s, ({_PAIRS}) AS f
WHERE d.rowid > ? AND d.rowid <= ? AND {_GIVEN} IS NOT NULL AND (s.rollup OR d.tenant_id IS NOT NULL)
GROUP BY 3, 4, 5, 6
ON CONFLICT DO UPDATE SET n = n + excluded.n
"""
PAIR_STATE = "SELECT paired_rowid, (SELECT max(rowid) FROM activity_decisions) FROM activity_decision_counts_state"
SET_PAIR_STATE = "UPDATE activity_decision_counts_state SET paired_rowid = ? WHERE id = 1"


def encode(value: str | None) -> str:
    """Key a value: '' for NULL, '=' and the value otherwise."""
    return "" if value is None else "=" + value


def decode(key: str) -> str | None:
    return None if key == "" else key[1:]


def fold_new(
    db: sqlite3.Connection,
    chunk: int | None = None,
    *,
    at_least: int = 1,
    pairs_at_least: int = 1,
    at_most: int | None = None,
) -> int:
    """Inside the caller's write transaction, count decisions above the watermarks; return rows left.

    Each kind of count (the plain ones, the pair rows) is folded when at least `at_least` (`pairs_at_least`)
    of its decisions wait and, given `at_most`, no more than that; `chunk` caps the rowids folded.
    """
    left = _fold_pairs(db, chunk, pairs_at_least, at_most)
    counted, newest = db.execute(STATE).fetchone()
    newest = newest or 0
    waiting = newest - counted
    if waiting < max(at_least, 1) or (at_most is not None and waiting > at_most):
        return max(left, waiting, 0)
    upto = newest if chunk is None else min(newest, counted + chunk)
    db.execute(DELTA, (counted, upto))
    for sql in ADD_DELTA:
        db.execute(sql)
    db.execute(SET_STATE, (upto,))
    return max(left, newest - upto)


def _fold_pairs(db: sqlite3.Connection, chunk: int | None, at_least: int, at_most: int | None) -> int:
    paired, newest = db.execute(PAIR_STATE).fetchone()
    newest = newest or 0
    waiting = newest - paired
    if waiting < max(at_least, 1) or (at_most is not None and waiting > at_most):
        return max(waiting, 0)
    upto = newest if chunk is None else min(newest, paired + min(chunk, PAIR_CATCH_UP_CHUNK))
    db.execute(PAIR_FOLD, (paired, upto))
    db.execute(SET_PAIR_STATE, (upto,))
    return newest - upto


def backlog(db: sqlite3.Connection) -> tuple[int, int]:
    """The decisions the background folder still has to fold (those the writer's batches leave), and the
    plain counts' watermark."""
    counted, newest = db.execute(STATE).fetchone()
    paired = db.execute(PAIR_STATE).fetchone()[0]
    newest = newest or 0
    plain, pairs = newest - counted, newest - paired
    return max(plain if plain >= FOLD_ROWS else 0, pairs if pairs >= PAIR_BATCH else 0), counted


def catch_up(db: sqlite3.Connection) -> None:
    """Fold every uncounted decision in, a chunk of rowids per write transaction."""
    while True:
        db.execute("BEGIN IMMEDIATE")
        try:
            left = fold_new(db, CATCH_UP_CHUNK)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        if not left:
            return


def rebuild(db: sqlite3.Connection) -> None:
    """Recount from nothing (after a REPLACE, which SQLite deletes without firing triggers)."""
    db.execute("BEGIN IMMEDIATE")
    db.execute("DELETE FROM activity_decision_counts")
    db.execute(SET_STATE, (0,))
    db.execute(SET_PAIR_STATE, (0,))
    db.execute("COMMIT")
    catch_up(db)


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
