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

import sqlite3

from cavra_ingest.store.dimensions import (
    ALL_TIME,
    ANY_OUTCOME,
    ANY_TENANT,
    COUNTED_FIELDS,
    DAY,
    PAIR_FIELDS,
    PAIRED,
    ROLLED,
    pairs,
)
from cavra_ingest.store.sqlite.batchcounts import UPSERT, BatchCounts, Tally

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
ADD_DELTA: tuple[str, ...] = (
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
# Once more than this share of the rows is unseen (a new or upgraded file, rows CAVRA inserted in bulk), a read
# skips the counts and runs straight on the table. Unseen rows are read by rowid, whole, and grouped by a
# sort, where a plain GROUP BY walks a narrow index in order: at 1 M rows, all unseen, the facets took 2.6 s
# that way against 0.7 s plain, and a tenant's total 547 ms against 154 ms. Both cross near a quarter.
PLAIN_FROM = 0.25
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


def fold_new(
    db: sqlite3.Connection,
    chunk: int | None = None,
    *,
    at_least: int = 1,
    pairs_at_least: int = 1,
    at_most: int | None = None,
    memory: BatchCounts | None = None,
) -> int:
    """Inside the caller's write transaction, count decisions above the watermarks; return rows left.

    Each kind of count (the plain ones, the pair rows) is folded when at least `at_least` (`pairs_at_least`)
    of its decisions wait and, given `at_most`, no more than that; `chunk` caps the rowids folded. `memory`:
    the writer's tally of its own batches' pair rows, upserted instead of the SQL pair fold where it covers them.
    """
    left = _fold_pairs(db, chunk, pairs_at_least, at_most, None if memory is None else memory.pairs)
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


def _fold_pairs(
    db: sqlite3.Connection, chunk: int | None, at_least: int, at_most: int | None, tally: Tally | None
) -> int:
    paired, newest = db.execute(PAIR_STATE).fetchone()
    newest = newest or 0
    waiting = newest - paired
    if waiting < max(at_least, 1) or (at_most is not None and waiting > at_most):
        return max(waiting, 0)
    upto = newest if chunk is None else min(newest, paired + min(chunk, PAIR_CATCH_UP_CHUNK))
    if tally is not None and upto == newest and tally.covers(paired, newest):
        db.executemany(UPSERT, tally.rows())
    else:
        db.execute(PAIR_FOLD, (paired, upto))
    db.execute(SET_PAIR_STATE, (upto,))
    _restart(tally, upto, newest)
    return newest - upto


def _restart(tally: Tally | None, upto: int, newest: int) -> None:
    """After a fold, a tally counts on from the new watermark if nothing is left above it."""
    if tally is None:
        return
    if upto == newest:
        tally.start(upto)
    else:
        tally.drop()


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
