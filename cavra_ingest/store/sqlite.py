"""The embedded default store: one SQLite file in WAL mode, one writer, a few readers."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import msgspec

from ..migrate import apply_migrations
from ..models import ENCODER, Accepted, SessionRecord
from .base import (
    DECISION_FILTERS,
    FACET_FIELDS,
    SESSION_FILTERS,
    Facets,
    ListQuery,
    Outcome,
    Page,
    StoreUnavailable,
    WriteItem,
    decision_ids,
    facets_from_rows,
    keyset_chunks,
    plan_batch,
    session_ids,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

READERS = 2

SELECT_STORED_DECISIONS = (
    "SELECT decision_id, payload FROM activity_decisions WHERE decision_id IN (SELECT value FROM json_each(?))"
)
SELECT_STORED_SESSIONS = """
SELECT session_id, agent_id, actor, repository, policy_pack, state, started_at, updated_at,
       decision_count, blocked_count, approval_required_count, tenant_id, workspace_id, payload
FROM activity_sessions WHERE session_id IN (SELECT value FROM json_each(?))
"""
INSERT_DECISION = """
INSERT INTO activity_decisions (
    decision_id, session_id, agent_id, actor, repository, policy_pack, action_type, target,
    rule_id, decision, severity, timestamp, correlation_id, payload, tenant_id, workspace_id
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
UPSERT_SESSION = """
INSERT INTO activity_sessions (
    session_id, agent_id, actor, repository, policy_pack, state, started_at, updated_at,
    decision_count, blocked_count, approval_required_count, payload, tenant_id, workspace_id
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (session_id) DO UPDATE SET
    agent_id = excluded.agent_id, actor = excluded.actor, repository = excluded.repository,
    policy_pack = excluded.policy_pack, state = excluded.state, started_at = excluded.started_at,
    updated_at = excluded.updated_at, decision_count = excluded.decision_count,
    blocked_count = excluded.blocked_count, approval_required_count = excluded.approval_required_count,
    payload = excluded.payload, tenant_id = excluded.tenant_id, workspace_id = excluded.workspace_id
"""
# Most batches only move a known session's counts and times: leaving its described (and mostly indexed)
# columns out of the statement spares rewriting four index entries per session (bench/wal.py measures it).
UPDATE_SESSION_COUNTS = """
UPDATE activity_sessions SET started_at = ?, updated_at = ?, decision_count = ?, blocked_count = ?,
    approval_required_count = ?, payload = ?
WHERE session_id = ?
"""
SELECT_DECISION = "SELECT payload FROM activity_decisions WHERE decision_id = ?"
SELECT_SESSION = "SELECT payload FROM activity_sessions WHERE session_id = ?"

# Query arguments map to columns through these allow-lists only.
DECISION_COLUMNS = {name: name for name in DECISION_FILTERS}
SESSION_COLUMNS = {name: name for name in SESSION_FILTERS}


# Filters that may drive a decisions listing (and facets) through their index (006), most selective first.
# With none of them the time index drives, and the other filters are tested on its entries, which carry
# the facet and scope fields. The flag says whether several values (IN) may drive.
DECISION_DRIVERS = (("session_id", True), ("correlation_id", True), ("agent_id", True), ("repository", True))
# Order does not matter for a count or a facet, so 004's single-column `decision` index may drive those.
DECISION_COUNT_DRIVERS = (*DECISION_DRIVERS, ("decision", True))


class Listing:
    """How one table is listed: its filter columns, time and id columns, order, driving indexes."""

    def __init__(
        self,
        table: str,
        columns: dict[str, str],
        time_column: str,
        id_column: str,
        drivers: tuple[tuple[str, bool], ...] | None = None,
        count_drivers: tuple[tuple[str, bool], ...] | None = None,
    ) -> None:
        self.table = table
        self.columns = columns
        self.time_column = time_column
        self.id_column = id_column
        # None: leave the index choice to SQLite (small tables).
        self.drivers = drivers
        self.count_drivers = count_drivers or drivers

    @staticmethod
    def driver(query: ListQuery, drivers: tuple[tuple[str, bool], ...]) -> str | None:
        """Pick the one filter whose index drives the query, or None for the time index."""
        given = dict(query.equals)
        for name, many in drivers:
            values = given.get(name)
            if values and (many or len(values) == 1):
                return name
        return None

    def where(self, query: ListQuery, *, with_position: bool, counting: bool = False) -> tuple[str, list[Any]]:
        """Build the WHERE clause from allow-listed columns and bound parameters."""
        clauses: list[str] = []
        params: list[Any] = []
        drivers = self.count_drivers if counting else self.drivers
        driver = None if drivers is None else self.driver(query, drivers)
        if driver not in dict(self.drivers or ()) and (query.since or query.until or len(query.equals) > 1):
            # 004's `decision` index counts outcomes alone, index-only. With a time range (usually
            # narrower) or other filters (whose values it lacks), the covering time index counts cheaper.
            driver = None
        for name, values in query.equals:
            column = self.columns[name]
            # Unary + keeps SQLite from using this column's index (and then sorting every match):
            # one chosen index drives, the other filters are tested on the entries it yields.
            if drivers is not None and name != driver:
                column = "+" + column
            if len(values) == 1:
                clauses.append(f"{column} = ?")
            else:
                clauses.append(f"{column} IN ({', '.join('?' * len(values))})")
            params.extend(values)
        if query.since is not None:
            clauses.append(f"{self.time_column} >= ?")
            params.append(query.since)
        if query.until is not None:
            clauses.append(f"{self.time_column} < ?")
            params.append(query.until)
        if query.min_blocked is not None:
            clauses.append("blocked_count >= ?")
            params.append(query.min_blocked)
        if with_position and query.after is not None:
            # The first term bounds the index range; the second settles rows with the same time.
            time_column, id_column = self.time_column, self.id_column
            if query.oldest_first:
                clauses.append(f"{time_column} >= ? AND ({time_column} > ? OR {id_column} > ?)")
            else:
                clauses.append(f"{time_column} <= ? AND ({time_column} < ? OR {id_column} > ?)")
            params.extend([query.after[0], query.after[0], query.after[1]])
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def select(self, query: ListQuery) -> tuple[str, list[Any]]:
        where, params = self.where(query, with_position=True)
        direction = "ASC" if query.oldest_first else "DESC"
        sql = (
            f"SELECT {self.time_column}, {self.id_column}, payload FROM {self.table}{where}"
            f" ORDER BY {self.time_column} {direction}, {self.id_column} ASC LIMIT ?"
        )
        params.append(query.limit)
        if query.after is None and query.offset:
            sql += " OFFSET ?"
            params.append(query.offset)
        return sql, params

    def count(self, query: ListQuery) -> tuple[str, list[Any]]:
        where, params = self.where(query, with_position=False, counting=True)
        return f"SELECT count(*) FROM {self.table}{where}", params

    def facets(self, query: ListQuery, fields: tuple[str, ...]) -> tuple[str, list[Any]]:
        """Count matches per value of each field in one statement: rows of (field, value, count)."""
        columns = [(name, self.columns[name]) for name in fields]
        if not (query.equals or query.since or query.until):
            # No filter: each field's own index (004) is read in order, index-only.
            arms = [f"SELECT '{name}', {col}, count(*) FROM {self.table} GROUP BY {col}" for name, col in columns]
            return " UNION ALL ".join(arms), []
        # One pass over the matches, then grouped per field: a GROUP BY per field on the table would tempt
        # SQLite to walk that field's index in full, row by row. Without a selective driver the pass
        # reads only the time index, which holds every facet field.
        where, params = self.where(query, with_position=False)
        picked = ", ".join(col for _, col in columns)
        arms = [f"SELECT '{name}', {col}, count(*) FROM matches GROUP BY {col}" for name, col in columns]
        sql = f"WITH matches AS MATERIALIZED (SELECT {picked} FROM {self.table}{where}) " + " UNION ALL ".join(arms)
        return sql, params


DECISIONS = Listing(
    "activity_decisions", DECISION_COLUMNS, "timestamp", "decision_id", DECISION_DRIVERS, DECISION_COUNT_DRIVERS
)
SESSIONS = Listing("activity_sessions", SESSION_COLUMNS, "updated_at", "session_id")


def decision_row(item: Accepted) -> tuple[Any, ...]:
    r = item.record
    return (
        r.decision_id,
        r.session_id,
        r.agent_id,
        r.actor,
        r.repository,
        r.policy_pack,
        r.action_type,
        r.target,
        r.rule_id,
        r.decision,
        r.severity,
        r.timestamp,
        r.correlation_id,
        item.payload.decode(),
        r.tenant_id,
        r.workspace_id,
    )


def session_row(s: SessionRecord) -> tuple[Any, ...]:
    return (
        s.session_id,
        s.agent_id,
        s.actor,
        s.repository,
        s.policy_pack,
        s.state,
        s.started_at,
        s.updated_at,
        s.decision_count,
        s.blocked_count,
        s.approval_required_count,
        ENCODER.encode(s).decode(),
        s.tenant_id,
        s.workspace_id,
    )


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


def session_from_row(row: sqlite3.Row | tuple[Any, ...]) -> SessionRecord:
    # Columns are authoritative; payload only adds what has no column (it may come from CAVRA itself).
    try:
        extra = msgspec.json.decode(row[13])
    except (msgspec.DecodeError, TypeError):
        extra = {}
    if not isinstance(extra, dict):
        extra = {}
    refs = extra.get("evidence_refs")
    return SessionRecord(
        schema_version="cavra.session.v1",
        session_id=row[0],
        agent_id=row[1],
        actor=row[2],
        repository=row[3] or "local",
        policy_pack=row[4],
        state=row[5],
        started_at=row[6],
        updated_at=row[7],
        decision_count=row[8],
        blocked_count=row[9],
        approval_required_count=row[10],
        tenant_id=row[11],
        workspace_id=row[12],
        evidence_refs=sorted({str(ref) for ref in refs}) if isinstance(refs, list) else [],
        last_decision_id=extra.get("last_decision_id"),
        metadata=extra.get("metadata") if isinstance(extra.get("metadata"), dict) else None,
    )


class SqliteStore:
    """SQLite in WAL mode: each batch is one `BEGIN IMMEDIATE` transaction on a dedicated writer thread."""

    kind = "sqlite"

    def __init__(self, path: Path, *, synchronous: str = "FULL", busy_timeout_ms: int = 2000) -> None:
        self.path = path
        self.synchronous = synchronous.upper()
        self.busy_timeout_ms = busy_timeout_ms
        # A plain connection owned by one thread: a whole batch is one hop off the event loop, not one per
        # statement, so the loop and the writer trade the GIL once per transaction.
        self._writer: sqlite3.Connection | None = None
        self._writer_thread: ThreadPoolExecutor | None = None
        self._readers: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        self._reader_list: list[aiosqlite.Connection] = []

    async def open(self) -> None:
        """Migrate, then open the writer and the reader connections."""
        await asyncio.to_thread(apply_migrations, self.path)
        self._writer_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cavra-sqlite-writer")
        self._writer = await self._on_writer(self._connect_writer)
        for _ in range(READERS):
            reader = await aiosqlite.connect(self.path, isolation_level=None)
            await reader.execute(f"PRAGMA busy_timeout={self.busy_timeout_ms}")
            await reader.execute("PRAGMA query_only=1")
            await reader.execute("PRAGMA cache_size=-32768")
            self._reader_list.append(reader)
            self._readers.put_nowait(reader)

    def _connect_writer(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        for pragma in (
            "PRAGMA journal_mode=WAL",
            f"PRAGMA synchronous={self.synchronous}",
            f"PRAGMA busy_timeout={self.busy_timeout_ms}",
            "PRAGMA cache_size=-65536",
        ):
            db.execute(pragma)
        return db

    async def _on_writer(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._writer_thread, fn, *args)

    async def close(self) -> None:
        """Close every connection; the writer has drained before this is called."""
        for reader in self._reader_list:
            await reader.close()
        self._reader_list.clear()
        if self._writer is not None:
            await self._on_writer(self._writer.close)
            self._writer = None
        if self._writer_thread is not None:
            self._writer_thread.shutdown()
            self._writer_thread = None

    async def write(self, items: list[WriteItem]) -> list[Outcome]:
        """Store a batch and its session summaries in one transaction."""
        assert self._writer is not None, "store is not open"
        abandoned = threading.Event()
        try:
            return await self._on_writer(self._write_batch, self._writer, items, abandoned)
        except asyncio.CancelledError:
            # The thread runs on; it rolls back instead of committing what nobody will acknowledge.
            abandoned.set()
            raise

    def _write_batch(self, db: sqlite3.Connection, items: list[WriteItem], abandoned: threading.Event) -> list[Outcome]:
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(str(exc)) from exc
        try:
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
                db.executemany(INSERT_DECISION, [decision_row(item) for item in plan.inserts])
            counts_only = [s for s in plan.sessions.values() if described.get(s.session_id) == _described(s)]
            if counts_only:
                db.executemany(UPDATE_SESSION_COUNTS, [_counts_row(s) for s in counts_only])
            if len(counts_only) < len(plan.sessions):
                changed = [s for s in plan.sessions.values() if described.get(s.session_id) != _described(s)]
                db.executemany(UPSERT_SESSION, [session_row(s) for s in changed])
            if abandoned.is_set():
                raise StoreUnavailable("batch abandoned before commit")
            db.execute("COMMIT")
        except BaseException as exc:
            # Nothing of a failed batch may stay visible.
            self._rollback(db)
            if isinstance(exc, sqlite3.OperationalError):
                raise StoreUnavailable(str(exc)) from exc
            raise
        return plan.outcomes

    @staticmethod
    def _rollback(db: sqlite3.Connection) -> None:
        try:
            if db.in_transaction:
                db.execute("ROLLBACK")
        except sqlite3.Error:
            log.exception("rollback failed")

    @asynccontextmanager
    async def _reader(self) -> AsyncIterator[aiosqlite.Connection]:
        reader = await self._readers.get()
        try:
            yield reader
        finally:
            self._readers.put_nowait(reader)

    async def _one(self, sql: str, params: tuple[Any, ...]) -> bytes | None:
        async with self._reader() as db:
            rows = list(await db.execute_fetchall(sql, params))
        return rows[0][0].encode() if rows else None

    async def get_decision(self, decision_id: str) -> bytes | None:
        return await self._one(SELECT_DECISION, (decision_id,))

    async def get_session(self, session_id: str) -> bytes | None:
        return await self._one(SELECT_SESSION, (session_id,))

    async def _list(self, listing: Listing, query: ListQuery) -> Page:
        sql, params = listing.select(query)
        async with self._reader() as db:
            rows = list(await db.execute_fetchall(sql, params))
            total = None
            if query.with_total:
                count_sql, count_params = listing.count(query)
                total = list(await db.execute_fetchall(count_sql, count_params))[0][0]
        last_key = (rows[-1][0], rows[-1][1]) if rows else None
        return Page([row[2].encode() for row in rows], total, last_key)

    async def list_decisions(self, query: ListQuery) -> Page:
        return await self._list(DECISIONS, query)

    async def list_sessions(self, query: ListQuery) -> Page:
        return await self._list(SESSIONS, query)

    async def facets(self, query: ListQuery, top: int) -> Facets:
        """Count matches per facet field in one statement on one reader; keep the top values."""
        sql, params = DECISIONS.facets(query, FACET_FIELDS)
        async with self._reader() as db:
            rows = await db.execute_fetchall(sql, params)
        return facets_from_rows(rows, top)

    def iter_decisions(self, query: ListQuery, chunk_size: int) -> AsyncIterator[list[bytes]]:
        """Page through matches by keyset, taking a reader per chunk so a slow client holds none."""
        return keyset_chunks(self.list_decisions, query, chunk_size)
