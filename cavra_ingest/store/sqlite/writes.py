"""What the SQLite store's writer thread runs: its connection, one transaction per batch, the folds.

Every function here takes the writer's plain `sqlite3` connection and runs on its one thread, so a whole batch
is one hop off the event loop, not one per statement.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec

from cavra_ingest.auditlog.tables import append_leaves_sqlite
from cavra_ingest.core.models import ENCODER, SessionRecord
from cavra_ingest.core.planning import decision_ids, plan_batch, quota_usage, session_ids
from cavra_ingest.core.sink import WriteItem, WriteResult
from cavra_ingest.store import cache
from cavra_ingest.store.base import StoreUnavailable
from cavra_ingest.store.migrate import create_private
from cavra_ingest.store.sql import (
    ADD_TOKEN_USAGE,
    INSERT_DECISION,
    SESSION_SELECT_COLUMNS,
    SQLITE_SEARCH_TEXT,
    UPSERT_SESSION,
    decision_row,
    session_from_row,
    session_row,
)
from cavra_ingest.store.sqlite import counts
from cavra_ingest.store.sqlite.batchcounts import BatchCounts

log = logging.getLogger(__name__)

SELECT_STORED_DECISIONS = (
    "SELECT decision_id, payload FROM activity_decisions WHERE decision_id IN (SELECT value FROM json_each(?))"
)
SELECT_STORED_SESSIONS = (
    f"SELECT {SESSION_SELECT_COLUMNS} FROM activity_sessions WHERE session_id IN (SELECT value FROM json_each(?))"
)
# Most batches only move a known session's counts and times: leaving its described (and mostly indexed)
# columns out of the statement spares rewriting four index entries per session (bench/wal.py measures it).
UPDATE_SESSION_COUNTS = """
UPDATE activity_sessions SET started_at = ?, updated_at = ?, decision_count = ?, blocked_count = ?,
    approval_required_count = ?, payload = ?
WHERE session_id = ?
"""
SELECT_SEARCH_PROGRESS = (
    "SELECT indexed_upto, (SELECT max(rowid) FROM activity_decisions) FROM activity_search_progress"
)
INDEX_SEARCH = (
    f"INSERT INTO activity_search (rowid, body) SELECT rowid, {SQLITE_SEARCH_TEXT} FROM activity_decisions"
    " WHERE rowid > ? AND rowid <= ?"
)
Statements = list[tuple[str, list[tuple[Any, ...]]]]


def create_with_page_size(path: Path, page_size: int) -> None:
    """Give a file with no page yet (missing or empty) its page size; leave any other file as it is."""
    path.parent.mkdir(parents=True, exist_ok=True)
    create_private(path)
    if path.stat().st_size:
        return  # a file keeps its page size until a VACUUM outside WAL mode (docs/performance.md)
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute(f"PRAGMA page_size={int(page_size)}")
        # Switching to WAL writes the first page, which fixes the page size before any table exists.
        db.execute("PRAGMA journal_mode=WAL")
    finally:
        db.close()


def connect_writer(
    path: Path, synchronous: str, busy_timeout_ms: int, cache_mb: int | None, warm_sessions: int
) -> sqlite3.Connection:
    """Open the writer's connection, size its page cache and read into it the pages every insert touches."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    for pragma in (
        "PRAGMA journal_mode=WAL",
        f"PRAGMA synchronous={synchronous}",
        f"PRAGMA busy_timeout={busy_timeout_ms}",
        # 007's triggers make each INSERT keep a statement journal; in memory it costs ~5 µs per row
        # instead of ~25 µs as a temp file (docs/reading.md, "Times written by CAVRA").
        "PRAGMA temp_store=MEMORY",
    ):
        db.execute(pragma)
    # Random ids put each insert on a cold page of the id and correlation indexes once those outgrow
    # the cache: at 5 M decisions that halved the write rate with the old fixed 64 MiB.
    kib = cache.apply(db, cache_mb, warm_sessions)
    started = time.monotonic()
    read = cache.warm(db, kib, warm_sessions)
    log.info(cache.describe(path, kib, read, time.monotonic() - started))
    return db


def rollback(db: sqlite3.Connection) -> None:
    try:
        if db.in_transaction:
            db.execute("ROLLBACK")
    except sqlite3.Error:
        log.exception("rollback failed")


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """One write transaction on the writer's connection: committed at the end, rolled back on any error.

    SQLite's operational errors (a lock, a full disk) are raised as StoreUnavailable.
    """
    try:
        db.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        raise StoreUnavailable(str(exc)) from exc
    try:
        yield
        db.execute("COMMIT")
    except BaseException as exc:
        rollback(db)
        if isinstance(exc, sqlite3.OperationalError):
            raise StoreUnavailable(str(exc)) from exc
        raise


def _described(s: SessionRecord) -> tuple[Any, ...]:
    # The same columns, in the same order, as _stored_described reads from a row.
    return (s.agent_id, s.actor, s.repository, s.policy_pack, s.state, s.tenant_id, s.workspace_id)


def _stored_described(row: sqlite3.Row | tuple[Any, ...]) -> tuple[Any, ...]:
    return (row[1], row[2], row[3], row[4], row[5], row[11], row[12])


def _counts_row(s: SessionRecord) -> tuple[Any, ...]:
    return (
        s.started_at,
        s.updated_at,
        s.decision_count,
        s.blocked_count,
        s.approval_required_count,
        ENCODER.encode(s).decode(),
        s.session_id,
    )


def write_batch(
    db: sqlite3.Connection,
    items: list[WriteItem],
    abandoned: threading.Event,
    audit_log: bool,
    memory: BatchCounts | None = None,
) -> list[WriteResult]:
    """Store a batch, its audit-log leaves, quota usage and session summaries in one transaction.

    `memory`: the writer's tally of its own decisions' pair rows (batchcounts.py), kept across batches; a
    rolled-back batch leaves it covering rowids the file does not hold, so the next batch drops it.
    """
    # Nothing of a failed batch may stay visible: the transaction is rolled back whole.
    with transaction(db):
        stored: dict[str, bytes] = {}
        ids = decision_ids(items)
        if ids:
            rows = db.execute(SELECT_STORED_DECISIONS, (msgspec.json.encode(ids),)).fetchall()
            stored = {row[0]: row[1].encode() for row in rows}
        rows = db.execute(SELECT_STORED_SESSIONS, (msgspec.json.encode(session_ids(items)),)).fetchall()
        sessions = {row[0]: session_from_row(row) for row in rows}
        described = {row[0]: _stored_described(row) for row in rows}
        plan = plan_batch(items, stored, sessions)
        if plan.inserts:
            before = None if memory is None else memory.before_insert(db)
            db.executemany(INSERT_DECISION, [decision_row(item) for item in plan.inserts])
            if memory is not None and before is not None:
                memory.after_insert(db, before, plan.inserts)
            if audit_log:
                append_leaves_sqlite(db, plan.inserts)
            # Only records created here count against a quota: duplicates and refusals never reach it.
            usage = quota_usage(plan.inserts)
            if usage:
                db.executemany(ADD_TOKEN_USAGE, usage)
        counts_only = [s for s in plan.sessions.values() if described.get(s.session_id) == _described(s)]
        if counts_only:
            db.executemany(UPDATE_SESSION_COUNTS, [_counts_row(s) for s in counts_only])
        if len(counts_only) < len(plan.sessions):
            changed = [s for s in plan.sessions.values() if described.get(s.session_id) != _described(s)]
            db.executemany(UPSERT_SESSION, [session_row(s) for s in changed])
        # Decisions waiting for the counts (this batch's, and any another program inserted) join them once
        # there are enough to share count rows; until then reads count them from the table. A larger backlog
        # is left to the background folder (fold_counts).
        counts.fold_new(
            db,
            at_least=counts.FOLD_ROWS,
            pairs_at_least=counts.PAIR_BATCH,
            at_most=counts.BATCH_FOLD_MAX,
            memory=memory,
        )
        if abandoned.is_set():
            raise StoreUnavailable("batch abandoned before commit")
    return plan.results


def run_statements(db: sqlite3.Connection, statements: Statements) -> None:
    """Run other writers' statements (the audit log's) in one transaction."""
    with transaction(db):
        for sql, rows in statements:
            db.executemany(sql, rows)


def fold_counts(db: sqlite3.Connection, max_rows: int) -> tuple[int, int]:
    """Fold up to `max_rows` more of a counts backlog; return (rows left, counted upto)."""
    # A read first: with no backlog, the write lock is not taken at all.
    left, counted = counts.backlog(db)
    if not left:
        return 0, counted
    with transaction(db):
        counts.fold_new(db, max_rows, at_least=counts.FOLD_ROWS, pairs_at_least=counts.PAIR_BATCH)
        left, counted = counts.backlog(db)
    return left, counted


def index_search(db: sqlite3.Connection, max_rows: int) -> tuple[int, int]:
    """Index up to `max_rows` more decisions for search; return (indexed upto, newest rowid)."""
    # A read first: when nothing is new, the write lock is not taken at all.
    upto, newest = db.execute(SELECT_SEARCH_PROGRESS).fetchone()
    newest = newest or 0
    if upto == newest:
        return upto, newest
    with transaction(db):
        upto, newest = db.execute(SELECT_SEARCH_PROGRESS).fetchone()
        newest = newest or 0
        if newest < upto:
            # The newest rows were deleted, and SQLite may hand their rowids out again: start over.
            db.execute("INSERT INTO activity_search (activity_search) VALUES ('delete-all')")
            upto = 0
        target = min(newest, upto + max_rows)
        db.execute(INDEX_SEARCH, (upto, target))
        db.execute("UPDATE activity_search_progress SET indexed_upto = ?", (target,))
    return target, newest
