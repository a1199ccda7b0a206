"""Delete decisions older than a date, in bounded batches, keeping session summaries exact.

Each batch is its own short write transaction (under the same lock the server's writer takes), so the
command is safe while the server runs and resumable: a re-run deletes what is left. With an archive, a
batch's records are appended to the gzip NDJSON file and fsynced before the transaction that deletes them.

Audit log rule (tables of migrations 009 and 010): prune never deletes leaves or checkpoints; a pruned
decision's leaf keeps its hash, so every checkpoint still verifies and the archived record still proves its
inclusion. Only the decision rows (the leaves' payloads) go, and each one's leaf is listed in `audit_pruned`
with the cut-off, in the same transaction, so `verify` reports it as pruned rather than deleted.
"""

from __future__ import annotations

import gzip
import logging
import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import msgspec

from cavra_ingest.core.models import DecisionRecord, SessionRecord, utc_text
from cavra_ingest.core.progress import Progress
from cavra_ingest.core.summary import add_decisions
from cavra_ingest.settings import Settings
from cavra_ingest.store.sql import SESSION_SELECT_COLUMNS, UPSERT_SESSION, session_from_row, session_row

audit = logging.getLogger("cavra_ingest.audit")
DECISION = msgspec.json.Decoder(DecisionRecord)

COUNT_OLD = "SELECT count(*) FROM activity_decisions WHERE timestamp < ?"
SELECT_OLD = """SELECT decision_id, session_id, payload FROM activity_decisions WHERE timestamp < ?
ORDER BY timestamp, decision_id LIMIT ?"""
DELETE_DECISION = "DELETE FROM activity_decisions WHERE decision_id = ?"
RECORD_PRUNED = """INSERT INTO audit_pruned (leaf_index, decision_id, cutoff, pruned_at)
SELECT leaf_index, decision_id, ?, ? FROM audit_leaves WHERE decision_id = ?
ON CONFLICT (leaf_index) DO NOTHING"""
SELECT_SESSION_ROW = f"SELECT {SESSION_SELECT_COLUMNS} FROM activity_sessions WHERE session_id = ?"
SELECT_SESSION_PAYLOADS = "SELECT payload FROM activity_decisions WHERE session_id = ?"
DELETE_SESSION = "DELETE FROM activity_sessions WHERE session_id = ?"


def cutoff(text: str) -> str:
    """Read DATE (`2026-01-31` or an RFC 3339 time) as the stored UTC text it is compared with."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--before: expected a date (2026-01-31) or an RFC 3339 time, got {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return utc_text(moment)


class Connection(Protocol):
    """What prune needs of a database: `?` statements and one write transaction at a time."""

    async def fetch(self, sql: str, params: Sequence[Any]) -> list[Sequence[Any]]: ...

    async def execute(self, sql: str, params: Sequence[Any]) -> None: ...

    async def begin(self) -> None: ...

    async def lock_sessions(self, session_ids: list[str]) -> None: ...

    async def commit(self) -> None: ...

    async def rollback(self) -> None: ...

    async def close(self) -> None: ...


class SqliteConnection:
    """A plain sqlite3 connection: the CLI does nothing else while it waits, so blocking calls are fine."""

    def __init__(self, path: Path, busy_timeout_ms: int) -> None:
        if not path.exists():
            raise FileNotFoundError(f"no SQLite store at {path}")
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute(f"PRAGMA busy_timeout={max(busy_timeout_ms, 5000)}")

    async def fetch(self, sql: str, params: Sequence[Any]) -> list[Sequence[Any]]:
        return self.db.execute(sql, params).fetchall()

    async def execute(self, sql: str, params: Sequence[Any]) -> None:
        self.db.execute(sql, params)

    async def begin(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    async def lock_sessions(self, session_ids: list[str]) -> None:
        """Nothing more to lock: BEGIN IMMEDIATE already holds the file's one write lock."""

    async def commit(self) -> None:
        self.db.execute("COMMIT")

    async def rollback(self) -> None:
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")

    async def close(self) -> None:
        self.db.close()


class PostgresConnection:
    """One asyncpg connection; each transaction takes the writer's advisory lock first."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.transaction: Any = None

    @classmethod
    async def connect(cls, settings: Settings) -> PostgresConnection:
        import asyncpg

        from cavra_ingest.store.postgres.store import schema_name

        schema = schema_name(settings.store.postgres_schema)
        return cls(await asyncpg.connect(settings.store.activity_db, server_settings={"search_path": schema}))

    async def fetch(self, sql: str, params: Sequence[Any]) -> list[Sequence[Any]]:
        from cavra_ingest.core.sqltext import numbered

        return list(await self.conn.fetch(numbered(sql), *params))

    async def execute(self, sql: str, params: Sequence[Any]) -> None:
        from cavra_ingest.core.sqltext import numbered

        await self.conn.execute(numbered(sql), *params)

    async def begin(self) -> None:
        from cavra_ingest.store.postgres.store import WRITE_LOCK

        self.transaction = self.conn.transaction()
        await self.transaction.start()
        await self.conn.execute("SELECT pg_advisory_xact_lock($1)", WRITE_LOCK)

    async def lock_sessions(self, session_ids: list[str]) -> None:
        """Hold the summaries being refolded, in the writers' order: writers take no global lock."""
        from cavra_ingest.store.postgres.store import LOCK_SESSION_ROWS

        await self.conn.execute(LOCK_SESSION_ROWS, session_ids)

    async def commit(self) -> None:
        await self.transaction.commit()

    async def rollback(self) -> None:
        if self.transaction is not None and not self.transaction._done:
            await self.transaction.rollback()

    async def close(self) -> None:
        await self.conn.close()


async def connect(settings: Settings) -> Connection:
    """Open the configured SQL store for maintenance (the JSON store is rewritten whole by its server)."""
    if settings.store.kind == "postgres":
        return await PostgresConnection.connect(settings)
    if settings.store.kind == "sqlite":
        return SqliteConnection(settings.store.path, settings.store.sqlite_busy_timeout_ms)
    raise ValueError("prune works on the SQLite and PostgreSQL stores; the JSON store is for local pilots")


@dataclass
class PruneReport:
    before: str
    matched: int = 0
    decisions_removed: int = 0
    sessions_recounted: int = 0
    sessions_removed: int = 0
    archive: str | None = None
    dry_run: bool = False
    batches: int = 0
    touched: set[str] = field(default_factory=set, repr=False)
    removed: set[str] = field(default_factory=set, repr=False)


async def prune(
    conn: Connection,
    before: str,
    *,
    batch_size: int = 1000,
    archive: Path | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> PruneReport:
    """Delete decisions with `timestamp < before` batch by batch; recount (or remove) the sessions they leave."""
    report = PruneReport(before=before, archive=str(archive) if archive else None, dry_run=dry_run)
    report.matched = int((await conn.fetch(COUNT_OLD, [before]))[0][0])
    if progress is not None:
        progress.total = report.matched
    if dry_run:
        return report
    while True:
        rows = await conn.fetch(SELECT_OLD, [before, batch_size])
        if not rows:
            break
        if archive is not None:
            append_archive(archive, [text(row[2]) for row in rows])
        await conn.begin()
        try:
            pruned_at = utc_text(datetime.now(UTC))
            sessions = sorted({row[1] for row in rows})
            await conn.lock_sessions(sessions)
            for row in rows:
                await conn.execute(RECORD_PRUNED, [before, pruned_at, row[0]])
                await conn.execute(DELETE_DECISION, [row[0]])
            removed_now = set()
            for session_id in sessions:
                if await recount_session(conn, session_id, before):
                    removed_now.add(session_id)
            await conn.commit()
        except BaseException:
            await conn.rollback()
            raise
        report.batches += 1
        report.decisions_removed += len(rows)
        # Distinct sessions: a long session spans many batches and is refolded in each.
        report.touched.update(sessions)
        report.removed.update(removed_now)
        report.sessions_removed = len(report.removed)
        report.sessions_recounted = len(report.touched - report.removed)
        if progress is not None:
            progress.advance(len(rows))
    audit.info(
        "pruned decisions before %s",
        before,
        extra={
            "before": before,
            "decisions_removed": report.decisions_removed,
            "sessions_recounted": report.sessions_recounted,
            "sessions_removed": report.sessions_removed,
            "archive": report.archive,
        },
    )
    return report


async def recount_session(conn: Connection, session_id: str, before: str) -> bool:
    """Refold a summary from its remaining decisions (state and metadata stay); drop it when none remain.

    Return whether the session was removed.
    """
    stored = await conn.fetch(SELECT_SESSION_ROW, [session_id])
    payloads = await conn.fetch(SELECT_SESSION_PAYLOADS, [session_id])
    if not stored:
        return False
    session: SessionRecord = session_from_row(stored[0])
    if not payloads:
        await conn.execute(DELETE_SESSION, [session_id])
        return True
    decisions = sorted((DECISION.decode(text(row[0])) for row in payloads), key=lambda d: (d.timestamp, d.decision_id))
    session.decision_count = session.blocked_count = session.approval_required_count = 0
    session.evidence_refs = []
    session.last_decision_id = None
    add_decisions(session, decisions)
    await conn.execute(UPSERT_SESSION, session_row(session))
    return False


def text(payload: str | bytes) -> str:
    return payload.decode() if isinstance(payload, bytes) else payload


def append_archive(path: Path, payloads: list[str]) -> None:
    """Append records to a gzip NDJSON file (a new gzip member per batch) and fsync before they are deleted."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as raw:
        with gzip.GzipFile(fileobj=raw, mode="ab") as archive:
            archive.write("".join(payload + "\n" for payload in payloads).encode())
        raw.flush()
        os.fsync(raw.fileno())
