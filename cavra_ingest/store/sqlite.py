"""The embedded default store: one SQLite file in WAL mode, one writer, a few readers."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import msgspec

from ..migrate import apply_migrations
from ..models import ENCODER, SessionRecord
from ..planning import decision_ids, plan_batch, session_ids
from ..settings import Settings
from . import cache, counts
from .base import (
    FACET_FIELDS,
    Facets,
    ListQuery,
    Page,
    StoreUnavailable,
    WriteItem,
    WriteResult,
    facets_from_rows,
    keyset_chunks,
)
from .sql import (
    DECISION_COLUMNS,
    INSERT_DECISION,
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

log = logging.getLogger(__name__)
T = TypeVar("T")

READERS = 2

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

# Filters that may drive a decisions listing (and facets) through their index (006), most selective first.
# With none of them the time index drives, and the other filters are tested on its entries, which carry
# the facet and scope fields. The flag says whether several values (IN) may drive.
DECISION_DRIVERS = (("session_id", True), ("correlation_id", True), ("agent_id", True), ("repository", True))
# Order does not matter for a count or a facet, so 004's single-column `decision` index may drive those.
DECISION_COUNT_DRIVERS = (*DECISION_DRIVERS, ("decision", True))


class SteeredListing(Listing):
    """A listing whose driving index SQLite is told, since its planner picks low-cardinality ones and sorts."""

    def __init__(
        self,
        *args: Any,
        drivers: tuple[tuple[str, bool], ...],
        count_drivers: tuple[tuple[str, bool], ...],
    ) -> None:
        super().__init__(*args)
        self.drivers = drivers
        self.count_drivers = count_drivers

    @staticmethod
    def driver(query: ListQuery, drivers: tuple[tuple[str, bool], ...]) -> str | None:
        """Pick the one filter whose index drives the query, or None for the time index."""
        given = dict(query.equals)
        for name, many in drivers:
            values = given.get(name)
            if values and (many or len(values) == 1):
                return name
        return None

    def unindexed(self, query: ListQuery, counting: bool) -> frozenset[str]:
        driver = self.driver(query, self.count_drivers if counting else self.drivers)
        if driver not in dict(self.drivers) and (query.since or query.until or len(query.equals) > 1):
            # 004's `decision` index counts outcomes alone, index-only. With a time range (usually
            # narrower) or other filters (whose values it lacks), the covering time index counts cheaper.
            driver = None
        # One chosen index drives; the other filters are tested on the entries it yields.
        return frozenset(name for name, _ in query.equals if name != driver)


DECISIONS = SteeredListing(
    "activity_decisions",
    DECISION_COLUMNS,
    "timestamp",
    "decision_id",
    drivers=DECISION_DRIVERS,
    count_drivers=DECISION_COUNT_DRIVERS,
)
# Sessions are few beside decisions: the planner chooses.
SESSIONS = Listing("activity_sessions", SESSION_COLUMNS, "updated_at", "session_id")


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


def _last_key(rows: list[Any]) -> tuple[str, str] | None:
    return (rows[-1][0], rows[-1][1]) if rows else None


class SqliteStore:
    """SQLite in WAL mode: each batch is one `BEGIN IMMEDIATE` transaction on a dedicated writer thread."""

    kind = "sqlite"

    def __init__(
        self, path: Path, *, synchronous: str = "FULL", busy_timeout_ms: int = 2000, cache_mb: int | None = None
    ) -> None:
        self.path = path
        # None: derived from the file at open (store/cache.py).
        self.cache_mb = cache_mb
        self.synchronous = synchronous.upper()
        self.busy_timeout_ms = busy_timeout_ms
        # A plain connection owned by one thread: a whole batch is one hop off the event loop, not one per
        # statement, so the loop and the writer trade the GIL once per transaction.
        self._writer: sqlite3.Connection | None = None
        self._writer_thread: ThreadPoolExecutor | None = None
        self._readers: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        self._reader_list: list[aiosqlite.Connection] = []

    @classmethod
    def from_settings(cls, settings: Settings) -> SqliteStore:
        return cls(
            settings.store_path,
            synchronous=settings.sqlite_synchronous,
            busy_timeout_ms=settings.sqlite_busy_timeout_ms,
            cache_mb=cache.parse(settings.sqlite_cache_mb),
        )

    async def migrate(self) -> list[str]:
        """Apply pending migrations to the file (created if missing)."""
        return await asyncio.to_thread(apply_migrations, self.path)

    async def open(self) -> None:
        """Migrate, then open the writer and the reader connections."""
        await self.migrate()
        self._writer_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cavra-sqlite-writer")
        self._writer = await self._on_writer(self._connect_writer)
        # Decisions already in the file that the counts have not seen (a new or upgraded file).
        await self._on_writer(counts.catch_up, self._writer)
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
            # 007's triggers make each INSERT keep a statement journal; in memory it costs ~5 µs per row
            # instead of ~25 µs as a temp file (docs/reading.md, "Times written by CAVRA").
            "PRAGMA temp_store=MEMORY",
        ):
            db.execute(pragma)
        # Random ids put each insert on a cold page of the id and correlation indexes once those outgrow
        # the cache: at 5 M decisions that halved the write rate with the old fixed 64 MiB.
        kib = cache.apply(db, self.cache_mb)
        started = time.monotonic()
        warmed = cache.warm(db, kib)
        log.info(cache.describe(self.path, kib, time.monotonic() - started if warmed else None))
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

    async def write(self, items: list[WriteItem]) -> list[WriteResult]:
        """Store a batch and its session summaries in one transaction."""
        assert self._writer is not None, "store is not open"
        abandoned = threading.Event()
        try:
            return await self._on_writer(self._write_batch, self._writer, items, abandoned)
        except asyncio.CancelledError:
            # The thread runs on; it rolls back instead of committing what nobody will acknowledge.
            abandoned.set()
            raise

    def _write_batch(
        self, db: sqlite3.Connection, items: list[WriteItem], abandoned: threading.Event
    ) -> list[WriteResult]:
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
            # This batch's decisions, and any another program inserted since, join the counts (counts.py).
            counts.fold_new(db)
            if abandoned.is_set():
                raise StoreUnavailable("batch abandoned before commit")
            db.execute("COMMIT")
        except BaseException as exc:
            # Nothing of a failed batch may stay visible.
            self._rollback(db)
            if isinstance(exc, sqlite3.OperationalError):
                raise StoreUnavailable(str(exc)) from exc
            raise
        return plan.results

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
        field = counts.servable(query, facets=False) if listing is DECISIONS and query.with_total else None
        if field is not None:
            # A broad total from the counts; the page itself is read as always.
            parts = await self._counted(lambda counted: counts.total_statements(query, field, counted))
            async with self._reader() as db:
                page = list(await db.execute_fetchall(sql, params))
            return Page([row[2].encode() for row in page], sum(row[0] for row in parts), _last_key(page))
        async with self._reader() as db:
            rows = list(await db.execute_fetchall(sql, params))
            total = None
            if query.with_total:
                count_sql, count_params = listing.count(query)
                total = list(await db.execute_fetchall(count_sql, count_params))[0][0]
        return Page([row[2].encode() for row in rows], total, _last_key(rows))

    async def list_decisions(self, query: ListQuery) -> Page:
        return await self._list(DECISIONS, query)

    async def list_sessions(self, query: ListQuery) -> Page:
        return await self._list(SESSIONS, query)

    async def facets(self, query: ListQuery, top: int) -> Facets:
        """Count matches per facet field (from the counts when they answer the filter); keep the top values."""
        if counts.servable(query, facets=True) is not None:
            # The top values straight from the counts when no scanned row adds to them (the usual case).
            parts = await self._counted(
                lambda counted: counts.facet_scans(query, counted),
                lambda scanned: counts.facet_counts(query, None if scanned else top),
            )
            return facets_from_rows(counts.merge_facet_rows(parts), top)
        sql, params = DECISIONS.facets(query, FACET_FIELDS)
        async with self._reader() as db:
            rows = await db.execute_fetchall(sql, params)
        return facets_from_rows(rows, top)

    async def _counted(
        self,
        statements: Callable[[int], list[tuple[str, list[Any]]]],
        last: Callable[[bool], list[tuple[str, list[Any]]]] | None = None,
    ) -> list[Any]:
        """Run count statements in one read snapshot, after folding in a backlog of uncounted rows.

        `last`, told whether the statements returned any row, gives more statements to run.
        """
        async with self._reader() as db:
            counted, newest = (await db.execute_fetchall(counts.STATE))[0]  # type: ignore[index]
        if (newest or 0) - counted > counts.CATCH_UP_ROWS and self._writer is not None:
            await self._on_writer(counts.catch_up, self._writer)
        async with self._reader() as db:
            # One snapshot: the watermark, the counts and the scans agree even while the writer commits.
            await db.execute("BEGIN")
            try:
                counted = (await db.execute_fetchall(counts.STATE))[0][0]  # type: ignore[index]
                rows: list[Any] = []
                for sql, params in statements(counted):
                    rows.extend(await db.execute_fetchall(sql, params))
                for sql, params in last(bool(rows)) if last is not None else []:
                    rows.extend(await db.execute_fetchall(sql, params))
            finally:
                await db.execute("COMMIT")
        return rows

    async def holds(self, table: str, field: str, value: str) -> bool:
        async with self._reader() as db:
            rows = list(await db.execute_fetchall(holds_sql(table, field), (value,)))
        return bool(rows)

    def iter_decisions(self, query: ListQuery, chunk_size: int) -> AsyncIterator[list[bytes]]:
        """Page through matches by keyset, taking a reader per chunk so a slow client holds none."""
        return keyset_chunks(self.list_decisions, query, chunk_size)
