"""The server-database store: PostgreSQL through asyncpg, for deployments beyond one machine."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import asyncpg

from cavra_ingest.auditlog.tables import QUEUE_LEAVES
from cavra_ingest.core.models import RejectionReply
from cavra_ingest.core.planning import decision_ids, plan_batch, quota_usage, session_ids
from cavra_ingest.core.search import MIN_TERM_CHARS, like_pattern
from cavra_ingest.core.sink import WriteItem, WriteResult
from cavra_ingest.core.sqltext import numbered
from cavra_ingest.settings import Settings
from cavra_ingest.store.base import (
    FACET_FIELDS,
    Facets,
    ListQuery,
    Page,
    QueryTimeout,
    StoreUnavailable,
    facets_from_rows,
    keyset_chunks,
)
from cavra_ingest.store.migrate import apply_postgres_migrations
from cavra_ingest.store.sql import (
    ADD_TOKEN_USAGE,
    DECISION_COLUMNS,
    POSTGRES_SEARCH_TEXT,
    SELECT_DECISION,
    SELECT_SESSION,
    SESSION_COLUMNS,
    SESSION_SELECT_COLUMNS,
    UPSERT_SESSION,
    Listing,
    decision_row,
    holds_sql,
    session_from_row,
    session_row,
)


# PostgreSQL's planner weighs the 006 indexes by its own statistics: no steering.
class SearchListing(Listing):
    """Decisions: a search is narrowed by the trigram index of `activity_search` (012), plus the queued rows."""

    def search_clauses(self, terms: tuple[str, ...]) -> tuple[list[str], list[Any]]:
        clauses, params = super().search_clauses(terms)
        # Shorter terms give the index no trigram to look up; the row check still tests them.
        long = [term for term in terms if len(term) >= MIN_TERM_CHARS]
        if long:
            found = " AND ".join("body ILIKE ?" for _ in long)
            clauses.insert(0, SEARCH_CANDIDATES.format(found=found))
            params[:0] = [like_pattern(term) for term in long]
        return clauses, params


SEARCH_CANDIDATES = (
    "decision_id IN (SELECT decision_id FROM activity_search WHERE {found}"
    " UNION ALL SELECT decision_id FROM activity_search_queue)"
)
# The background indexer's batch: take queued ids (other servers' indexers skip what this one holds), index
# their rows, and report what is left.
INDEX_SEARCH = """
WITH picked AS (
    DELETE FROM activity_search_queue
    WHERE ctid = ANY (ARRAY(SELECT ctid FROM activity_search_queue LIMIT $1 FOR UPDATE SKIP LOCKED))
    RETURNING decision_id
)
INSERT INTO activity_search (decision_id, body)
SELECT d.decision_id, cavra_search_text(d.target, d.rule_id, d.payload)
FROM activity_decisions d WHERE d.decision_id IN (SELECT decision_id FROM picked)
ON CONFLICT (decision_id) DO UPDATE SET body = excluded.body
"""
COUNT_QUEUED = "SELECT count(*) FROM activity_search_queue"

DECISIONS = SearchListing(
    "activity_decisions", DECISION_COLUMNS, "timestamp", "decision_id", search_text=POSTGRES_SEARCH_TEXT, like="ILIKE"
)
SESSIONS = Listing("activity_sessions", SESSION_COLUMNS, "updated_at", "session_id")
# Maintenance (recount, prune) takes this lock so two of them never interleave; writers do not take it.
WRITE_LOCK = 0x63617673
SELECT_STORED_DECISIONS = "SELECT decision_id, payload FROM activity_decisions WHERE decision_id = ANY($1::text[])"
# Writers serialise per session with row locks only. A session row must exist to be locked, so first each
# missing one is inserted as a placeholder (a concurrent insert of the same id waits for the other
# transaction); then every row is locked. Both steps go in session_id order, so writers never deadlock.
CLAIM_SESSIONS = """
INSERT INTO activity_sessions (session_id, agent_id, actor, policy_pack, started_at, updated_at, payload)
SELECT s, '', '', '', '', '', '{}' FROM unnest($1::text[]) AS s ORDER BY s
ON CONFLICT (session_id) DO NOTHING RETURNING session_id
"""
LOCK_SESSIONS = (
    f"SELECT {SESSION_SELECT_COLUMNS} FROM activity_sessions WHERE session_id = ANY($1::text[])"
    " ORDER BY session_id FOR UPDATE"
)
# Maintenance locks existing summaries only (it never creates one), in the writers' order.
LOCK_SESSION_ROWS = "SELECT 1 FROM activity_sessions WHERE session_id = ANY($1::text[]) ORDER BY session_id FOR UPDATE"
DROP_PLACEHOLDERS = "DELETE FROM activity_sessions WHERE session_id = ANY($1::text[])"
# One statement for the batch, in decision_id order (two writers inserting the same ids wait in one order);
# RETURNING names the rows this transaction really created.
INSERT_NEW_DECISIONS = """
INSERT INTO activity_decisions (
    decision_id, session_id, agent_id, actor, repository, policy_pack, action_type, target,
    rule_id, decision, severity, timestamp, correlation_id, payload, tenant_id, workspace_id
) SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
    $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::text[], $16::text[])
ON CONFLICT (decision_id) DO NOTHING RETURNING decision_id
"""
# A deadlock or a lost insert race is retried inside the store this many times before the batch gets a 503.
INSERT_REJECTION = """
INSERT INTO ingest_rejections (stream_seq, item_index, decision_id, session_id, tenant_id, status, detail,
    rejected_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING
"""
SELECT_REJECTIONS = """
SELECT stream_seq, decision_id, session_id, tenant_id, status, detail, rejected_at FROM ingest_rejections
WHERE ($1::text IS NULL OR decision_id = $1) AND ($2::text IS NULL OR session_id = $2)
  AND ($3::text IS NULL OR tenant_id = $3) AND stream_seq > $4
ORDER BY stream_seq, item_index LIMIT $5
"""
WRITE_ATTEMPTS = 5
# SQLSTATE classes of faults that may clear: connection, resources (disk full), operator
# intervention, transaction rollback (deadlock, serialization), lock not available, read-only.
RETRYABLE_STATES = ("08", "53", "57", "40", "55P03", "25006")


def retryable(exc: BaseException) -> bool:
    if isinstance(exc, OSError | TimeoutError | asyncpg.InterfaceError):
        return True
    state = getattr(exc, "sqlstate", None) or ""
    return any(state.startswith(prefix) for prefix in RETRYABLE_STATES)


class Raced(Exception):
    """Another transaction committed one of this batch's new decision ids first: plan the batch again."""


class PostgresStore:
    """PostgreSQL: each batch is one transaction holding row locks on its sessions only."""

    kind = "postgres"

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "public",
        pool_size: int = 4,
        audit_log: bool = False,
        heavy_readers: int = 2,
        heavy_query_timeout_s: float = 30.0,
    ) -> None:
        self.dsn = dsn
        self.audit_log = audit_log
        # At most `heavy_readers` exports, facets or counts hold a pool connection at once, so point reads,
        # pages and the writer always find one; each statement runs under `statement_timeout`.
        self.heavy_query_timeout_s = heavy_query_timeout_s
        self._heavy = asyncio.Semaphore(max(1, min(heavy_readers, pool_size - 2)))
        self.schema = schema_name(schema)
        self.pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        # The search indexer's own connection: it never takes one the writer or the readers are waiting for.
        self._indexer: asyncpg.Connection | None = None
        self._upsert_session = numbered(UPSERT_SESSION)
        self._add_usage = numbered(ADD_TOKEN_USAGE)

    @classmethod
    def from_settings(cls, settings: Settings) -> PostgresStore:
        return cls(
            settings.store.activity_db or "",
            schema=settings.store.postgres_schema,
            audit_log=settings.audit.enabled,
            heavy_readers=settings.store.heavy_readers,
            heavy_query_timeout_s=settings.store.heavy_query_timeout_s,
        )

    async def migrate(self) -> list[str]:
        """Create the schema if needed and apply pending migrations."""
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            await conn.execute(f'SET search_path TO "{self.schema}"')
            return await apply_postgres_migrations(conn)
        finally:
            await conn.close()

    async def open(self) -> None:
        """Migrate, then open the pool."""
        await self.migrate()
        self._pool = await asyncpg.create_pool(
            self.dsn,
            min_size=1,
            max_size=self.pool_size,
            server_settings={"search_path": self.schema, "application_name": f"cavra-ingest:{self.schema}"},
        )

    async def close(self) -> None:
        if self._indexer is not None:
            await self._indexer.close()
            self._indexer = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "store is not open"
        return self._pool

    async def write(self, items: list[WriteItem]) -> list[WriteResult]:
        """Store a batch and its session summaries in one transaction, beside other writers."""
        for attempt in range(WRITE_ATTEMPTS):
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    return await self._write(conn, items)
            except (Raced, asyncpg.DeadlockDetectedError) as exc:
                # Nothing of this attempt was committed; the next one sees what the other writer stored.
                if attempt == WRITE_ATTEMPTS - 1:
                    raise StoreUnavailable(f"gave up after {WRITE_ATTEMPTS} concurrent conflicts: {exc}") from exc
            except (asyncpg.ConnectionDoesNotExistError, asyncpg.InterfaceError, ConnectionError) as exc:
                # A pooled connection the server ended (restart, idle kill): the pool drops it, so one more
                # attempt gets a fresh one. Planning again is safe: what did commit is now seen as stored.
                if attempt > 0:
                    raise StoreUnavailable(str(exc)) from exc
            except Exception as exc:
                if retryable(exc):
                    raise StoreUnavailable(str(exc)) from exc
                raise
        raise AssertionError("unreachable")

    async def _write(self, conn: asyncpg.Connection, items: list[WriteItem]) -> list[WriteResult]:
        sessions = sorted(session_ids(items))
        placeholders = {row[0] for row in await conn.fetch(CLAIM_SESSIONS, sessions)}
        rows = await conn.fetch(LOCK_SESSIONS, sessions)
        # Read after the locks: every decision of these sessions committed so far is visible now.
        stored_sessions = {row[0]: session_from_row(tuple(row)) for row in rows if row[0] not in placeholders}
        stored: dict[str, bytes] = {}
        ids = decision_ids(items)
        if ids:
            stored = {row[0]: row[1].encode() for row in await conn.fetch(SELECT_STORED_DECISIONS, ids)}
        plan = plan_batch(items, stored, stored_sessions)
        if plan.inserts:
            ordered = sorted(plan.inserts, key=lambda item: item.record.decision_id)
            columns = list(zip(*(decision_row(item) for item in ordered), strict=True))
            created = await conn.fetch(INSERT_NEW_DECISIONS, *columns)
            if len(created) != len(ordered):
                # The same id under another session, stored by a writer that held other locks.
                raise Raced(f"{len(ordered) - len(created)} decision id(s) stored concurrently")
            if self.audit_log:
                # The sequencer numbers leaves after COMMIT, in queue order (batch order within a batch).
                await conn.execute(QUEUE_LEAVES, [item.record.decision_id for item in plan.inserts])
        if plan.sessions:
            await conn.executemany(self._upsert_session, [session_row(s) for s in plan.sessions.values()])
        unused = sorted(placeholders - plan.sessions.keys())
        if unused:
            await conn.execute(DROP_PLACEHOLDERS, unused)
        # Last, so a token's usage row stays locked only until COMMIT: writers of one token queue on it that long.
        usage = quota_usage(plan.inserts)
        if usage:
            await conn.executemany(self._add_usage, usage)
        return plan.results

    async def _one(self, sql: str, key: str) -> bytes | None:
        value = await self.pool.fetchval(numbered(sql), key)
        return value.encode() if value is not None else None

    async def get_decision(self, decision_id: str) -> bytes | None:
        return await self._one(SELECT_DECISION, decision_id)

    async def get_session(self, session_id: str) -> bytes | None:
        return await self._one(SELECT_SESSION, session_id)

    async def _heavy_fetch(self, sql: str, params: Sequence[Any]) -> list[Any]:
        """Run a heavy read in its own slot and transaction, stopped by the server at the time limit."""
        try:
            async with asyncio.timeout(self.heavy_query_timeout_s):
                await self._heavy.acquire()
        except TimeoutError:
            raise QueryTimeout(f"no heavy reader free within {self.heavy_query_timeout_s:g} s; retry later") from None
        try:
            async with self.pool.acquire() as conn, conn.transaction(readonly=True):
                # SET LOCAL takes no parameters; the value is a number of milliseconds we computed.
                # At least 1 ms: 0 would mean no limit at all.
                await conn.execute(f"SET LOCAL statement_timeout = {max(1, int(self.heavy_query_timeout_s * 1000))}")
                return list(await conn.fetch(numbered(sql), *params))
        except asyncpg.QueryCanceledError:
            raise QueryTimeout(
                f"query exceeded the {self.heavy_query_timeout_s:g} s limit; narrow the filter"
            ) from None
        finally:
            self._heavy.release()

    async def _list(self, listing: Listing, query: ListQuery, heavy: bool = False) -> Page:
        sql, params = listing.select(query)
        if heavy:
            rows = await self._heavy_fetch(sql, params)
        else:
            rows = await self.pool.fetch(numbered(sql), *params)
        total = None
        if query.with_total:
            count_sql, count_params = listing.count(query)
            total = (await self._heavy_fetch(count_sql, count_params))[0][0]
        last_key = (rows[-1][0], rows[-1][1]) if rows else None
        return Page([row[2].encode() for row in rows], total, last_key)

    async def list_decisions(self, query: ListQuery) -> Page:
        return await self._list(DECISIONS, query)

    async def list_sessions(self, query: ListQuery) -> Page:
        return await self._list(SESSIONS, query)

    async def facets(self, query: ListQuery, top: int) -> Facets:
        sql, params = DECISIONS.facets(query, FACET_FIELDS)
        return facets_from_rows(await self._heavy_fetch(sql, params), top)

    async def holds(self, table: str, field: str, value: str, within: Mapping[str, str] | None = None) -> bool:
        within = within or {}
        sql = numbered(holds_sql(table, field, within))
        return await self.pool.fetchval(sql, value, *within.values()) is not None

    def iter_decisions(self, query: ListQuery, chunk_size: int) -> AsyncIterator[list[bytes]]:
        return keyset_chunks(lambda chunk: self._list(DECISIONS, chunk, heavy=True), query, chunk_size)

    async def index_search(self, max_rows: int) -> tuple[int, int | None]:
        """Index up to `max_rows` queued decisions for search; return (rows still queued, None)."""
        if self._indexer is None or self._indexer.is_closed():
            self._indexer = await asyncpg.connect(
                self.dsn,
                server_settings={"search_path": self.schema, "application_name": f"cavra-indexer:{self.schema}"},
            )
        conn = self._indexer
        try:
            async with conn.transaction():
                await conn.execute(INDEX_SEARCH, max_rows)
            return await conn.fetchval(COUNT_QUEUED), None
        except BaseException:
            # A broken connection is replaced on the next call.
            self._indexer = None
            await conn.close()
            raise

    async def histogram(self, query: ListQuery, unit_chars: int) -> list[tuple[str, str, int]]:
        sql, params = DECISIONS.histogram(query, unit_chars)
        return [(row[0], row[1], row[2]) for row in await self._heavy_fetch(sql, params)]

    async def time_bounds(self, query: ListQuery) -> tuple[str | None, str | None]:
        sql, params = DECISIONS.bounds(query)
        rows = await self._heavy_fetch(sql, params)
        return (rows[0][0], rows[0][1]) if rows else (None, None)

    async def add_rejections(self, rows: Sequence[tuple[int, int, RejectionReply]]) -> None:
        params = [(seq, i, r.decision_id, r.session_id, r.tenant_id, r.status, r.detail, r.rejected_at)
                  for seq, i, r in rows]  # fmt: skip
        await self.pool.executemany(INSERT_REJECTION, params)

    async def rejections(
        self, decision_id: str | None, session_id: str | None, tenant_id: str | None, after: int, limit: int
    ) -> list[tuple[int, RejectionReply]]:
        rows = await self.pool.fetch(SELECT_REJECTIONS, decision_id, session_id, tenant_id, after, limit)
        return [(row[0], RejectionReply(*row[1:])) for row in rows]


def schema_name(text: str) -> str:
    """Validate a schema name before it is quoted into DDL."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", text):
        raise ValueError(f"invalid PostgreSQL schema name: {text!r}")
    return text
