"""The server-database store: PostgreSQL through asyncpg, for deployments beyond one machine."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg

from ..auditlog import INSERT_LEAF, NEXT_INDEX, leaf_rows
from ..migrate import apply_postgres_migrations
from ..planning import decision_ids, plan_batch, session_ids
from ..search import MIN_TERM_CHARS, like_pattern
from ..settings import Settings
from .base import (
    FACET_FIELDS,
    Facets,
    ListQuery,
    Page,
    QueryTimeout,
    StoreUnavailable,
    WriteItem,
    WriteResult,
    facets_from_rows,
    keyset_chunks,
)
from .sql import (
    DECISION_COLUMNS,
    INSERT_DECISION,
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
# Every writer, on any server, takes this lock per batch: counts stay exact across processes.
WRITE_LOCK = 0x63617673
SELECT_STORED_DECISIONS = "SELECT decision_id, payload FROM activity_decisions WHERE decision_id = ANY($1::text[])"
SELECT_STORED_SESSIONS = f"SELECT {SESSION_SELECT_COLUMNS} FROM activity_sessions WHERE session_id = ANY($1::text[])"
# SQLSTATE classes of faults that may clear: connection, resources (disk full), operator
# intervention, transaction rollback (deadlock, serialization), lock not available, read-only.
RETRYABLE_STATES = ("08", "53", "57", "40", "55P03", "25006")


def numbered(sql: str) -> str:
    """Turn the shared `?` placeholders into asyncpg's `$1, $2, ...`."""
    counter = iter(range(1, 10_000))
    return re.sub(r"\?", lambda _: f"${next(counter)}", sql)


def retryable(exc: BaseException) -> bool:
    if isinstance(exc, OSError | TimeoutError | asyncpg.InterfaceError):
        return True
    state = getattr(exc, "sqlstate", None) or ""
    return any(state.startswith(prefix) for prefix in RETRYABLE_STATES)


class PostgresStore:
    """PostgreSQL: each batch is one transaction under a cluster-wide advisory lock."""

    kind = "postgres"

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "public",
        pool_size: int = 4,
        audit_log: bool = False,
        heavy_readers: int = 2,
        heavy_timeout_s: float = 30.0,
    ) -> None:
        self.dsn = dsn
        self.audit_log = audit_log
        # At most `heavy_readers` exports, facets or counts hold a pool connection at once, so point reads,
        # pages and the writer always find one; each statement runs under `statement_timeout`.
        self.heavy_timeout_s = heavy_timeout_s
        self._heavy = asyncio.Semaphore(max(1, min(heavy_readers, pool_size - 2)))
        self.schema = schema_name(schema)
        self.pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        # The search indexer's own connection: it never takes one the writer or the readers are waiting for.
        self._indexer: asyncpg.Connection | None = None
        self._insert_decision = numbered(INSERT_DECISION)
        self._upsert_session = numbered(UPSERT_SESSION)
        self._insert_leaf = numbered(INSERT_LEAF)

    @classmethod
    def from_settings(cls, settings: Settings) -> PostgresStore:
        return cls(
            settings.activity_db or "",
            schema=settings.postgres_schema,
            audit_log=settings.audit_log,
            heavy_readers=settings.heavy_readers,
            heavy_timeout_s=settings.heavy_query_timeout_s,
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
        """Store a batch and its session summaries in one transaction."""
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", WRITE_LOCK)
                stored: dict[str, bytes] = {}
                ids = decision_ids(items)
                if ids:
                    rows = await conn.fetch(SELECT_STORED_DECISIONS, ids)
                    stored = {row[0]: row[1].encode() for row in rows}
                rows = await conn.fetch(SELECT_STORED_SESSIONS, session_ids(items))
                plan = plan_batch(items, stored, {row[0]: session_from_row(tuple(row)) for row in rows})
                if plan.inserts:
                    await conn.executemany(self._insert_decision, [decision_row(item) for item in plan.inserts])
                    if self.audit_log:
                        # Under the advisory lock: leaf indexes follow commit order across every server.
                        start = await conn.fetchval(NEXT_INDEX)
                        await conn.executemany(self._insert_leaf, leaf_rows(start, plan.inserts))
                if plan.sessions:
                    await conn.executemany(self._upsert_session, [session_row(s) for s in plan.sessions.values()])
        except Exception as exc:
            if retryable(exc):
                raise StoreUnavailable(str(exc)) from exc
            raise
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
            async with asyncio.timeout(self.heavy_timeout_s):
                await self._heavy.acquire()
        except TimeoutError:
            raise QueryTimeout(f"no heavy reader free within {self.heavy_timeout_s:g} s; retry later") from None
        try:
            async with self.pool.acquire() as conn, conn.transaction(readonly=True):
                # SET LOCAL takes no parameters; the value is a number of milliseconds we computed.
                # At least 1 ms: 0 would mean no limit at all.
                await conn.execute(f"SET LOCAL statement_timeout = {max(1, int(self.heavy_timeout_s * 1000))}")
                return list(await conn.fetch(numbered(sql), *params))
        except asyncpg.QueryCanceledError:
            raise QueryTimeout(f"query exceeded the {self.heavy_timeout_s:g} s limit; narrow the filter") from None
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

    async def holds(self, table: str, field: str, value: str) -> bool:
        return await self.pool.fetchval(numbered(holds_sql(table, field)), value) is not None

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


def schema_name(text: str) -> str:
    """Validate a schema name before it is quoted into DDL."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", text):
        raise ValueError(f"invalid PostgreSQL schema name: {text!r}")
    return text
