"""The embedded default store: one SQLite file in WAL mode, one writer, a few readers.

The writer thread's work is in `writes`, the read connections in `readers`, the listings' plans in `listings`
and the counts in `counts` (folds), `countplan` and `countreads` (reads).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from cavra_ingest.core.sink import WriteItem, WriteResult
from cavra_ingest.settings import Settings
from cavra_ingest.settings.checks import parse_cache_mb
from cavra_ingest.store.base import FACET_FIELDS, Facets, ListQuery, Page, facets_from_rows, keyset_chunks
from cavra_ingest.store.dimensions import DAY
from cavra_ingest.store.migrate import apply_migrations
from cavra_ingest.store.sql import SELECT_DECISION, SELECT_SESSION, Listing, holds_sql
from cavra_ingest.store.sqlite import countplan, countreads, writes
from cavra_ingest.store.sqlite.batchcounts import BatchCounts
from cavra_ingest.store.sqlite.listings import DECISIONS, SCANNED, SESSIONS, searching
from cavra_ingest.store.sqlite.readers import Readers
from cavra_ingest.store.sqlite.writes import Statements

T = TypeVar("T")


def _last_key(rows: list[Any]) -> tuple[str, str] | None:
    return (rows[-1][0], rows[-1][1]) if rows else None


class SqliteStore:
    """SQLite in WAL mode: each batch is one `BEGIN IMMEDIATE` transaction on a dedicated writer thread."""

    kind = "sqlite"

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "FULL",
        busy_timeout_ms: int = 2000,
        audit_log: bool = False,
        heavy_readers: int = 2,
        heavy_query_timeout_s: float = 30.0,
        search_index: bool = True,
        cache_mb: int | None = None,
        warm_sessions: int = 10_000,
        page_size: int | None = None,
    ) -> None:
        self.path = path
        # Taken only by a file that has no page yet; None leaves SQLite's default (4096).
        self.page_size = page_size
        # Each created decision also becomes an audit-log leaf in its own transaction (auditlog.py).
        self.audit_log = audit_log
        self.readers = Readers(path, busy_timeout_ms, heavy_readers, heavy_query_timeout_s)
        # Without the background indexer the trigram index is never filled: search scans the rows instead.
        self.decisions = DECISIONS if search_index else SCANNED
        # None: derived from the file at open (store/cache.py).
        self.cache_mb = cache_mb
        # How many of the most recently updated sessions the warm-up reads the index leaves of (0: none).
        self.warm_sessions = warm_sessions
        self.synchronous = synchronous.upper()
        self.busy_timeout_ms = busy_timeout_ms
        # A plain connection owned by one thread: a whole batch is one hop off the event loop, not one per
        # statement, so the loop and the writer trade the GIL once per transaction.
        self._writer: sqlite3.Connection | None = None
        self._writer_thread: ThreadPoolExecutor | None = None
        # The writer's own decisions counted as they are inserted, for its folds (used on its thread only).
        self._batch_counts = BatchCounts()

    @classmethod
    def from_settings(cls, settings: Settings) -> SqliteStore:
        return cls(
            settings.store.path,
            synchronous=settings.store.sqlite_synchronous,
            busy_timeout_ms=settings.store.sqlite_busy_timeout_ms,
            audit_log=settings.audit.enabled,
            heavy_readers=settings.store.heavy_readers,
            heavy_query_timeout_s=settings.store.heavy_query_timeout_s,
            search_index=settings.store.search_index,
            cache_mb=parse_cache_mb(settings.store.sqlite_cache_mb),
            warm_sessions=settings.store.sqlite_warm_sessions,
            page_size=settings.store.sqlite_page_size,
        )

    async def migrate(self) -> list[str]:
        """Apply pending migrations to the file (created if missing, with the configured page size)."""
        if self.page_size is not None:
            await asyncio.to_thread(writes.create_with_page_size, self.path, self.page_size)
        return await asyncio.to_thread(apply_migrations, self.path)

    async def open(self) -> None:
        """Migrate, then open the writer and the reader connections."""
        await self.migrate()
        self._writer_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cavra-sqlite-writer")
        self._writer = await self._on_writer(
            writes.connect_writer, self.path, self.synchronous, self.busy_timeout_ms, self.cache_mb, self.warm_sessions
        )
        await self.readers.open()

    async def _on_writer(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._writer_thread, fn, *args)

    async def close(self) -> None:
        """Close every connection; the writer has drained before this is called."""
        await self.readers.close()
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
            return await self._on_writer(
                writes.write_batch, self._writer, items, abandoned, self.audit_log, self._batch_counts
            )
        except asyncio.CancelledError:
            # The thread runs on; it rolls back instead of committing what nobody will acknowledge.
            abandoned.set()
            raise

    async def write_statements(self, statements: Statements) -> None:
        """Run other writers' statements (the audit log's) in one transaction on the writer's connection.

        A commit from any other connection makes SQLite drop this connection's whole page cache at its
        next transaction (the WAL changed under it): the warmed pages would be read again, one by one.
        """
        assert self._writer is not None, "store is not open"
        await self._on_writer(writes.run_statements, self._writer, statements)

    async def _one(self, sql: str, params: tuple[Any, ...]) -> bytes | None:
        async with self.readers.point() as db:
            rows = list(await db.execute_fetchall(sql, params))
        return rows[0][0].encode() if rows else None

    async def get_decision(self, decision_id: str) -> bytes | None:
        return await self._one(SELECT_DECISION, (decision_id,))

    async def get_session(self, session_id: str) -> bytes | None:
        return await self._one(SELECT_SESSION, (session_id,))

    async def _list(self, listing: Listing, query: ListQuery, heavy: bool = False) -> Page:
        field = countplan.servable(query, facets=False) if listing is self.decisions and query.with_total else None
        if field is not None:
            # A broad total from the counts; the page itself is read as always.
            parts = await self.readers.counted(lambda counted: countreads.total_statements(query, field, counted))
            if parts is not None:
                async with self.readers.heavy() if heavy else self.readers.point() as db:
                    page = list(await db.execute_fetchall(*listing.select(query)))
                return Page([row[2].encode() for row in page], sum(row[0] for row in parts), _last_key(page))
        # Not from the counts (or most of the table is not counted yet): the rows themselves.
        async with self.readers.heavy() if heavy else self.readers.point() as db:
            if listing is self.decisions:
                listing = await searching(db, query, self.decisions)
            sql, params = listing.select(query)
            # A search driven by rare trigrams reads and sorts every match anyway: count them in the same pass
            # instead of reading each again (`count(*) OVER ()` is computed before LIMIT).
            counted = query.with_total and query.after is None and getattr(listing, "pieces", None) is not None
            if counted:
                sql = sql.replace("SELECT ", "SELECT count(*) OVER (), ", 1)
            rows = list(await db.execute_fetchall(sql, params))
        total = None
        if counted and rows:
            total = rows[0][0]
            rows = [tuple(row[1:]) for row in rows]  # type: ignore[misc]
        elif query.with_total:
            # A count may visit every match: it runs on a heavy reader, never holding a page's.
            count_sql, count_params = listing.count(query)
            async with self.readers.heavy() as db:
                total = list(await db.execute_fetchall(count_sql, count_params))[0][0]
        return Page([row[2].encode() for row in rows], total, _last_key(rows))

    async def list_decisions(self, query: ListQuery) -> Page:
        return await self._list(self.decisions, query)

    async def list_sessions(self, query: ListQuery) -> Page:
        return await self._list(SESSIONS, query)

    async def facets(self, query: ListQuery, top: int) -> Facets:
        """Count matches per facet field (from the counts when they answer the filter); keep the top values."""
        field = countplan.servable(query, facets=True)
        if field is not None:
            # The top values straight from the counts when no scanned row adds to them (the usual case); a
            # paired filter's from its pair rows, which have a watermark of their own.
            parts = await self.readers.counted(
                lambda counted: countreads.facet_scans(query, counted),
                lambda scanned: countreads.together(countreads.facet_counts(query, None if scanned else top)),
                pairs=bool(field),
                split=countreads.long_edges(query),
            )
            if parts is not None:
                return facets_from_rows(countreads.merge_facet_rows(parts), top)
        async with self.readers.heavy() as db:
            listing = await searching(db, query, self.decisions)
            # Each half of the fields groups every match: on two readers when one is idle (a broad rule's
            # 250 k matches take ~400 ms of CPU to group six ways on one core; a file mostly uncounted, all).
            first, second = ([listing.facets(query, fields)] for fields in (FACET_FIELDS[0::2], FACET_FIELDS[1::2]))
            rows = await self.readers.across(db, [listing.facets(query, FACET_FIELDS)], (first, second))
        return facets_from_rows(rows, top)

    async def holds(self, table: str, field: str, value: str, within: Mapping[str, str] | None = None) -> bool:
        within = within or {}
        async with self.readers.point() as db:
            rows = list(await db.execute_fetchall(holds_sql(table, field, within), (value, *within.values())))
        return bool(rows)

    async def histogram(self, query: ListQuery, unit_chars: int) -> list[tuple[str, str, int]]:
        if unit_chars == DAY and countplan.servable(query, facets=True) == "":
            # Whole-day buckets over keyed filters: each day's outcomes from the counts (counts.py).
            counted = await self.readers.counted(lambda c: countreads.histogram_statements(query, c))
            if counted is not None:
                return countreads.merge_histogram_rows(counted)
        async with self.readers.heavy() as db:
            sql, params = (await searching(db, query, self.decisions)).histogram(query, unit_chars)
            return [(row[0], row[1], row[2]) for row in await db.execute_fetchall(sql, params)]

    async def time_bounds(self, query: ListQuery) -> tuple[str | None, str | None]:
        if query.since is None and query.until is None and countplan.servable(query, facets=True) == "":
            # All time over keyed filters: the first and last days from the counts, then only those days read.
            rows = await self.readers.counted(lambda c: countreads.bounds_statements(query, c))
            if rows is not None:
                firsts = [row[0] for row in rows if row[0] is not None]
                lasts = [row[1] for row in rows if row[1] is not None]
                return min(firsts, default=None), max(lasts, default=None)
        async with self.readers.heavy() as db:
            sql, params = (await searching(db, query, self.decisions)).bounds(query)
            row = list(await db.execute_fetchall(sql, params))[0]
        return row[0], row[1]

    async def fold_counts(self, max_rows: int) -> tuple[int, int | None]:
        """Fold up to `max_rows` more of a counts backlog on the writer thread; return (rows left, counted upto)."""
        assert self._writer is not None, "store is not open"
        return await self._on_writer(writes.fold_counts, self._writer, max_rows)

    async def index_search(self, max_rows: int) -> tuple[int, int | None]:
        """Index up to `max_rows` more decisions on the writer thread; return (rows left, indexed_upto)."""
        assert self._writer is not None, "store is not open"
        upto, newest = await self._on_writer(writes.index_search, self._writer, max_rows)
        return max(newest - upto, 0), upto

    def iter_decisions(self, query: ListQuery, chunk_size: int) -> AsyncIterator[list[bytes]]:
        """Page through matches by keyset on the heavy readers, one per chunk so a slow client holds none."""
        return keyset_chunks(lambda chunk: self._list(self.decisions, chunk, heavy=True), query, chunk_size)
