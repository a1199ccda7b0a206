"""`cavra-ingest recount`: rebuild session summaries from stored decisions.

CAVRA's own store, writing into a cavra-ingest file, freezes a session's `updated_at` and `evidence_refs`
and drops the keys it does not know; this puts every summary back to what its decisions say. It works a
batch of sessions per write transaction (the same lock the serving writer takes), so it is safe to run
while `serve` is running: a batch of the server waits for one of ours, never sees half of it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec

from cavra_ingest.core.compat import decision_from_stored
from cavra_ingest.core.models import SessionRecord
from cavra_ingest.core.progress import Progress
from cavra_ingest.core.summary import recount
from cavra_ingest.store.sql import SESSION_SELECT_COLUMNS, UPSERT_SESSION, session_from_row, session_row
from cavra_ingest.store.sqlite import counts

DEFAULT_BATCH_SESSIONS = 200
COUNT_SESSIONS = "SELECT count(DISTINCT session_id) FROM activity_decisions"
# Keyset over the session index: each batch starts where the last one ended, however large the table.
NEXT_SESSION_IDS = "SELECT DISTINCT session_id FROM activity_decisions WHERE session_id > ? ORDER BY session_id LIMIT ?"
SQLITE_DECISIONS = "SELECT payload FROM activity_decisions WHERE session_id IN (SELECT value FROM json_each(?))"
SQLITE_SESSIONS = (
    f"SELECT {SESSION_SELECT_COLUMNS} FROM activity_sessions WHERE session_id IN (SELECT value FROM json_each(?))"
)
PG_DECISIONS = "SELECT payload FROM activity_decisions WHERE session_id = ANY($1::text[])"
PG_SESSIONS = f"SELECT {SESSION_SELECT_COLUMNS} FROM activity_sessions WHERE session_id = ANY($1::text[])"


def rebuild(payloads: Iterable[str], stored: dict[str, SessionRecord]) -> list[SessionRecord]:
    """Recount each session from its decisions; state, metadata and scope not found in them are kept."""
    by_session: dict[str, list[Any]] = {}
    for payload in payloads:
        try:
            data = msgspec.json.decode(payload)
        except msgspec.DecodeError:
            continue
        record = decision_from_stored(data) if isinstance(data, dict) else None
        if record is not None:
            by_session.setdefault(record.session_id, []).append(record)
    summaries = []
    for session_id, decisions in sorted(by_session.items()):
        before = stored.get(session_id)
        summary = recount(session_id, decisions, before.state if before and before.state else "active")
        if before is not None:
            summary.metadata = before.metadata
            summary.tenant_id = summary.tenant_id or before.tenant_id
            summary.workspace_id = summary.workspace_id or before.workspace_id
        summaries.append(summary)
    return summaries


def _progress(total: int) -> Progress:
    return Progress("recount (sessions)", total)


def recount_sqlite(
    path: Path | str,
    *,
    session_id: str | None = None,
    batch_sessions: int = DEFAULT_BATCH_SESSIONS,
    busy_timeout_ms: int = 30_000,
) -> int:
    """Recount every session (or one) of a SQLite file, a batch per transaction; return how many."""
    db = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout_ms / 1000)
    try:
        total = 1 if session_id is not None else db.execute(COUNT_SESSIONS).fetchone()[0]
        done, after = 0, ""
        with _progress(total) as bar:
            while True:
                if session_id is not None:
                    ids = [session_id] if done == 0 else []
                else:
                    ids = [row[0] for row in db.execute(NEXT_SESSION_IDS, (after, batch_sessions))]
                if not ids:
                    if session_id is None:
                        # The decision counts too: after a tool's INSERT OR REPLACE (no trigger fires).
                        counts.rebuild(db)
                    return done
                _sqlite_batch(db, ids)
                done, after = done + len(ids), ids[-1]
                bar.advance(len(ids))
    finally:
        db.close()


def _sqlite_batch(db: sqlite3.Connection, ids: list[str]) -> None:
    key = msgspec.json.encode(ids)
    db.execute("BEGIN IMMEDIATE")
    try:
        stored = {row[0]: session_from_row(row) for row in db.execute(SQLITE_SESSIONS, (key,))}
        payloads = [row[0] for row in db.execute(SQLITE_DECISIONS, (key,))]
        db.executemany(UPSERT_SESSION, [session_row(s) for s in rebuild(payloads, stored)])
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


async def recount_postgres(
    dsn: str, schema: str, *, session_id: str | None = None, batch_sessions: int = DEFAULT_BATCH_SESSIONS
) -> int:
    """Recount every session (or one) of a PostgreSQL schema, holding each batch's session rows as writers do."""
    import asyncpg

    from cavra_ingest.core.sqltext import numbered
    from cavra_ingest.store.postgres.store import LOCK_SESSION_ROWS, WRITE_LOCK, schema_name

    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema_name(schema)})
    upsert = numbered(UPSERT_SESSION)
    try:
        total = 1 if session_id is not None else await conn.fetchval(COUNT_SESSIONS)
        done, after = 0, ""
        with _progress(total) as bar:
            while True:
                if session_id is not None:
                    ids = [session_id] if done == 0 else []
                else:
                    ids = [row[0] for row in await conn.fetch(numbered(NEXT_SESSION_IDS), after, batch_sessions)]
                if not ids:
                    return done
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", WRITE_LOCK)
                    # Writers take no global lock: hold their session rows, in their order, while recounting.
                    await conn.execute(LOCK_SESSION_ROWS, sorted(ids))
                    rows = await conn.fetch(PG_SESSIONS, ids)
                    stored = {row[0]: session_from_row(tuple(row)) for row in rows}
                    payloads = [row[0] for row in await conn.fetch(PG_DECISIONS, ids)]
                    summaries = rebuild(payloads, stored)
                    if summaries:
                        await conn.executemany(upsert, [session_row(s) for s in summaries])
                done, after = done + len(ids), ids[-1]
                bar.advance(len(ids))
    finally:
        await conn.close()
