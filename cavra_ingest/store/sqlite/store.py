"""The embedded default store: one SQLite file in WAL mode, one writer, a few readers."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import msgspec

from cavra_ingest.auditlog.tables import append_leaves_sqlite
from cavra_ingest.core.models import ENCODER, SessionRecord
from cavra_ingest.core.planning import decision_ids, plan_batch, quota_usage, session_ids
from cavra_ingest.core.search import trigrams
from cavra_ingest.core.sink import WriteItem, WriteResult
from cavra_ingest.settings import Settings
from cavra_ingest.settings.checks import parse_cache_mb
from cavra_ingest.store import cache
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
from cavra_ingest.store.migrate import apply_migrations, create_private
from cavra_ingest.store.sql import (
    ADD_TOKEN_USAGE,
    DECISION_COLUMNS,
    INSERT_DECISION,
    SELECT_DECISION,
    SELECT_SESSION,
    SESSION_COLUMNS,
    SESSION_SELECT_COLUMNS,
    SQLITE_SEARCH_TEXT,
    UPSERT_SESSION,
    Listing,
    decision_row,
    holds_sql,
    session_from_row,
    session_row,
)
from cavra_ingest.store.sqlite import counts

log = logging.getLogger(__name__)
T = TypeVar("T")

READERS = 2
# Changes when a connection's new read finds a commit made by another connection since its last read.
DATA_VERSION = "PRAGMA data_version"
# SQLite virtual-machine steps between two looks at a heavy statement's deadline (well under a millisecond).
PROGRESS_STEPS = 10_000


class Deadline:
    """A heavy reader's statement time limit, checked by SQLite's progress handler on the reader's thread."""

    def __init__(self) -> None:
        self.until = float("inf")

    def __call__(self) -> int:
        # Non-zero makes SQLite abandon the statement with "interrupted".
        return 1 if time.monotonic() > self.until else 0


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


def fts_match(pieces: list[str]) -> str:
    """An FTS5 query that needs every trigram (each quoted as a string)."""
    return " AND ".join('"' + piece.replace('"', '""') + '"' for piece in pieces)


class SteeredListing(Listing):
    """A listing whose driving index SQLite is told, since its planner picks low-cardinality ones and sorts."""

    steered = True

    def __init__(
        self,
        *args: Any,
        drivers: tuple[tuple[str, bool], ...],
        count_drivers: tuple[tuple[str, bool], ...],
        indexed_search: bool = True,
        pieces: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.drivers = drivers
        self.count_drivers = count_drivers
        self.indexed_search = indexed_search
        # The trigrams to look up, when chosen for one query (the rarest); None: all of the terms'.
        self.pieces = pieces

    def search_clauses(self, terms: tuple[str, ...]) -> tuple[list[str], list[Any]]:
        """Narrow to the rows whose indexed text holds every trigram of the terms, plus those not indexed yet."""
        clauses, params = super().search_clauses(terms)
        pieces = self.pieces or trigrams(terms)
        if self.indexed_search and pieces:
            clauses.insert(0, SEARCH_CANDIDATES)
            params.insert(0, fts_match(pieces))
        return clauses, params

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
        if query.terms and self.indexed_search:
            # The search's candidates (at most SEARCH_PROBE_ROWS of them) drive; no filter index may.
            return frozenset(name for name, _ in query.equals)
        driver = self.driver(query, self.count_drivers if counting else self.drivers)
        if driver not in dict(self.drivers) and (query.since or query.until or len(query.equals) > 1):
            # 004's `decision` index counts outcomes alone, index-only. With a time range (usually
            # narrower) or other filters (whose values it lacks), the covering time index counts cheaper.
            driver = None
        # One chosen index drives; the other filters are tested on the entries it yields.
        return frozenset(name for name, _ in query.equals if name != driver)


# Rows the trigram index (012) says may match, and every row the background indexer has not reached yet.
SEARCH_CANDIDATES = (
    "rowid IN (SELECT rowid FROM activity_search WHERE activity_search MATCH ? UNION ALL"
    " SELECT rowid FROM activity_decisions WHERE rowid > (SELECT indexed_upto FROM activity_search_progress))"
)
SELECT_SEARCH_PROGRESS = (
    "SELECT indexed_upto, (SELECT max(rowid) FROM activity_decisions) FROM activity_search_progress"
)
INDEX_SEARCH = (
    f"INSERT INTO activity_search (rowid, body) SELECT rowid, {SQLITE_SEARCH_TEXT} FROM activity_decisions"
    " WHERE rowid > ? AND rowid <= ?"
)


def decision_listing(indexed_search: bool = True, pieces: list[str] | None = None) -> SteeredListing:
    return SteeredListing(
        "activity_decisions",
        DECISION_COLUMNS,
        "timestamp",
        "decision_id",
        drivers=DECISION_DRIVERS,
        count_drivers=DECISION_COUNT_DRIVERS,
        indexed_search=indexed_search,
        pieces=pieces,
        search_text=SQLITE_SEARCH_TEXT,
    )


DECISIONS = decision_listing()
# A search whose trigrams match many rows is answered by reading rows newest first and checking each: a page
# of it ends early, where the index's candidate set would first be built in full (seconds at 1 M rows).
SCANNED = decision_listing(indexed_search=False)
SEARCH_PROBE_ROWS = 20_000
# Intersecting a trigram that every row holds costs ~100 ms at 5 M rows, a rare one well under 1 ms: each
# trigram's first SEARCH_PROBE_ROWS entries are counted, and the RARE_PIECES rarest drive.
RARE_PIECES = 3
PROBE_SEARCH = "SELECT count(*) FROM (SELECT 1 FROM activity_search WHERE activity_search MATCH ? LIMIT ?)"
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
        # Exports, facets and counts get connections of their own, so they can never take the ones point
        # reads and pages use; each of their statements stops at `heavy_query_timeout_s`.
        self.heavy_readers = max(1, heavy_readers)
        self.heavy_query_timeout_s = heavy_query_timeout_s
        self._heavy: asyncio.Queue[tuple[aiosqlite.Connection, Deadline]] = asyncio.Queue()
        # Without the background indexer the trigram index is never filled: search scans the rows instead.
        self.indexed_search = search_index
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
        self._readers: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        self._reader_list: list[aiosqlite.Connection] = []

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
            await asyncio.to_thread(create_with_page_size, self.path, self.page_size)
        return await asyncio.to_thread(apply_migrations, self.path)

    async def open(self) -> None:
        """Migrate, then open the writer and the reader connections."""
        await self.migrate()
        self._writer_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cavra-sqlite-writer")
        self._writer = await self._on_writer(self._connect_writer)
        for _ in range(READERS):
            self._readers.put_nowait(await self._connect_reader())
        for _ in range(self.heavy_readers):
            reader, deadline = await self._connect_reader(), Deadline()
            await reader.set_progress_handler(deadline, PROGRESS_STEPS)
            self._heavy.put_nowait((reader, deadline))

    async def _connect_reader(self) -> aiosqlite.Connection:
        reader = await aiosqlite.connect(self.path, isolation_level=None)
        await reader.execute(f"PRAGMA busy_timeout={self.busy_timeout_ms}")
        await reader.execute("PRAGMA query_only=1")
        await reader.execute("PRAGMA cache_size=-32768")
        self._reader_list.append(reader)
        return reader

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
        kib = cache.apply(db, self.cache_mb, self.warm_sessions)
        started = time.monotonic()
        read = cache.warm(db, kib, self.warm_sessions)
        log.info(cache.describe(self.path, kib, read, time.monotonic() - started))
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

    async def write_statements(self, statements: list[tuple[str, list[tuple[Any, ...]]]]) -> None:
        """Run other writers' statements (the audit log's) in one transaction on the writer's connection.

        A commit from any other connection makes SQLite drop this connection's whole page cache at its
        next transaction (the WAL changed under it): the warmed pages would be read again, one by one.
        """
        assert self._writer is not None, "store is not open"
        await self._on_writer(self._run_statements, self._writer, statements)

    def _run_statements(self, db: sqlite3.Connection, statements: list[tuple[str, list[tuple[Any, ...]]]]) -> None:
        with self._transaction(db):
            for sql, rows in statements:
                db.executemany(sql, rows)

    def _write_batch(
        self, db: sqlite3.Connection, items: list[WriteItem], abandoned: threading.Event
    ) -> list[WriteResult]:
        # Nothing of a failed batch may stay visible: the transaction is rolled back whole.
        with self._transaction(db):
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
                if self.audit_log:
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
            # Decisions waiting for the counts (this batch's, and any another program inserted) join them
            # once there are enough to share count rows; until then reads count them from the table. A
            # larger backlog is left to the background folder (fold_counts).
            counts.fold_new(
                db, at_least=counts.FOLD_ROWS, pairs_at_least=counts.PAIR_BATCH, at_most=counts.BATCH_FOLD_MAX
            )
            if abandoned.is_set():
                raise StoreUnavailable("batch abandoned before commit")
        return plan.results

    @staticmethod
    def _rollback(db: sqlite3.Connection) -> None:
        try:
            if db.in_transaction:
                db.execute("ROLLBACK")
        except sqlite3.Error:
            log.exception("rollback failed")

    @contextmanager
    def _transaction(self, db: sqlite3.Connection) -> Iterator[None]:
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
            self._rollback(db)
            if isinstance(exc, sqlite3.OperationalError):
                raise StoreUnavailable(str(exc)) from exc
            raise

    @asynccontextmanager
    async def _reader(self) -> AsyncIterator[aiosqlite.Connection]:
        reader = await self._readers.get()
        try:
            yield reader
        finally:
            try:
                await self._end_snapshot(reader)
            finally:
                self._readers.put_nowait(reader)

    @staticmethod
    async def _end_snapshot(reader: aiosqlite.Connection) -> None:
        """End a read transaction a caller left open before the reader is lent again.

        A caller cancelled (client gone) between its BEGIN and COMMIT leaves one; the next borrower's BEGIN
        would fail ("cannot start a transaction within a transaction").
        """
        if reader.in_transaction:
            await asyncio.shield(reader.execute("ROLLBACK"))

    @asynccontextmanager
    async def _heavy_reader(self) -> AsyncIterator[aiosqlite.Connection]:
        """Lend a heavy reader with its deadline set; a cancelled caller (client gone) interrupts its statement."""
        try:
            async with asyncio.timeout(self.heavy_query_timeout_s):
                reader, deadline = await self._heavy.get()
        except TimeoutError:
            raise QueryTimeout(f"no heavy reader free within {self.heavy_query_timeout_s:g} s; retry later") from None
        deadline.until = time.monotonic() + self.heavy_query_timeout_s
        try:
            yield reader
        except asyncio.CancelledError:
            # sqlite3_interrupt is safe from any thread; the next statement on this connection runs only
            # after the interrupted one has ended (aiosqlite runs them in order), so it is not affected.
            await asyncio.shield(reader.interrupt())
            raise
        except sqlite3.OperationalError as exc:
            if "interrupt" in str(exc):
                raise QueryTimeout(
                    f"query exceeded the {self.heavy_query_timeout_s:g} s limit; narrow the filter"
                ) from None
            raise
        finally:
            deadline.until = float("inf")
            try:
                await self._end_snapshot(reader)
            finally:
                self._heavy.put_nowait((reader, deadline))

    async def _one(self, sql: str, params: tuple[Any, ...]) -> bytes | None:
        async with self._reader() as db:
            rows = list(await db.execute_fetchall(sql, params))
        return rows[0][0].encode() if rows else None

    async def get_decision(self, decision_id: str) -> bytes | None:
        return await self._one(SELECT_DECISION, (decision_id,))

    async def get_session(self, session_id: str) -> bytes | None:
        return await self._one(SELECT_SESSION, (session_id,))

    async def _searching(self, db: aiosqlite.Connection, query: ListQuery) -> SteeredListing:
        """Choose how a search is answered: through the trigram index when it narrows enough, else by a scan."""
        if not (query.terms and self.indexed_search):
            return self.decisions
        pieces = trigrams(query.terms)
        if not pieces:
            return SCANNED
        counted = []
        for piece in pieces:
            rows = list(await db.execute_fetchall(PROBE_SEARCH, (fts_match([piece]), SEARCH_PROBE_ROWS)))
            counted.append((rows[0][0], piece))
        counted.sort()
        if counted[0][0] < SEARCH_PROBE_ROWS:
            return decision_listing(pieces=[piece for _, piece in counted[:RARE_PIECES]])
        # Every trigram is common; together they may still be rare.
        rows = list(await db.execute_fetchall(PROBE_SEARCH, (fts_match(pieces), SEARCH_PROBE_ROWS)))
        return SCANNED if rows[0][0] >= SEARCH_PROBE_ROWS else DECISIONS

    async def _list(self, listing: Listing, query: ListQuery, heavy: bool = False) -> Page:
        field = counts.servable(query, facets=False) if listing is self.decisions and query.with_total else None
        if field is not None:
            # A broad total from the counts; the page itself is read as always.
            parts = await self._counted(lambda counted: counts.total_statements(query, field, counted))
            async with self._heavy_reader() if heavy else self._reader() as db:
                page = list(await db.execute_fetchall(*listing.select(query)))
            return Page([row[2].encode() for row in page], sum(row[0] for row in parts), _last_key(page))
        async with self._heavy_reader() if heavy else self._reader() as db:
            if listing is self.decisions:
                listing = await self._searching(db, query)
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
            async with self._heavy_reader() as db:
                total = list(await db.execute_fetchall(count_sql, count_params))[0][0]
        return Page([row[2].encode() for row in rows], total, _last_key(rows))

    async def list_decisions(self, query: ListQuery) -> Page:
        return await self._list(self.decisions, query)

    async def list_sessions(self, query: ListQuery) -> Page:
        return await self._list(SESSIONS, query)

    async def facets(self, query: ListQuery, top: int) -> Facets:
        """Count matches per facet field (from the counts when they answer the filter); keep the top values."""
        field = counts.servable(query, facets=True)
        if field is not None:
            # The top values straight from the counts when no scanned row adds to them (the usual case); a
            # paired filter's from its pair rows, which have a watermark of their own.
            parts = await self._counted(
                lambda counted: counts.facet_scans(query, counted),
                lambda scanned: counts.together(counts.facet_counts(query, None if scanned else top)),
                pairs=bool(field),
                split=counts.long_edges(query),
            )
            return facets_from_rows(counts.merge_facet_rows(parts), top)
        async with self._heavy_reader() as db:
            sql, params = (await self._searching(db, query)).facets(query, FACET_FIELDS)
            rows = await db.execute_fetchall(sql, params)
        return facets_from_rows(rows, top)

    async def _counted(
        self,
        statements: Callable[[int], list[tuple[str, list[Any]]]],
        last: Callable[[bool], list[tuple[str, list[Any]]]] | None = None,
        *,
        pairs: bool = False,
        split: bool = False,
    ) -> list[Any]:
        """Run count statements in one read snapshot (uncounted rows are counted from the table).

        `last`, told whether the statements returned any row, gives more statements to run. `pairs`: the
        statements read pair rows, so the rows above the pairs' watermark are the uncounted ones. `split`:
        the statements may be shared with an idle heavy reader, run at once on both (same snapshot).
        """
        state, lag = (counts.PAIR_STATE, counts.PAIR_READ_LAG) if pairs else (counts.STATE, counts.READ_LAG_ROWS)
        async with self._reader() as db:
            counted, newest = (await db.execute_fetchall(state))[0]  # type: ignore[index]
        # A backlog (a new or upgraded file, rows CAVRA inserted in bulk) is counted from the table under
        # a heavy reader's time limit while the background folder works through it; a read never waits
        # for the writer.
        backlog = (newest or 0) - counted > lag
        reading = self._heavy_reader() if backlog else self._reader()
        async with reading as db, self._spare_reader(split and not backlog) as other:
            # Where the other reader's view of the file stands before this snapshot is taken.
            version = None if other is None else (await other.execute_fetchall(DATA_VERSION))[0][0]  # type: ignore[index]
            # One snapshot: the watermark, the counts and the scans agree even while the writer commits.
            await db.execute("BEGIN")
            try:
                counted = (await db.execute_fetchall(state))[0][0]  # type: ignore[index]
                work = statements(counted)
                rows: list[Any] = []
                if other is not None and len(work) > 1 and await self._same_snapshot(other, version):
                    halves = counts.together(work[0::2]), counts.together(work[1::2])
                    try:
                        mine, theirs = await asyncio.gather(self._fetch(db, halves[0]), self._fetch(other, halves[1]))
                    finally:
                        await other.execute("COMMIT")
                    rows = mine + theirs
                else:
                    rows = await self._fetch(db, counts.together(work))
                rows += await self._fetch(db, last(bool(rows)) if last is not None else [])
            finally:
                await db.execute("COMMIT")
        return rows

    @staticmethod
    async def _fetch(db: aiosqlite.Connection, statements: list[tuple[str, list[Any]]]) -> list[Any]:
        rows: list[Any] = []
        for sql, params in statements:
            rows.extend(await db.execute_fetchall(sql, params))
        return rows

    @asynccontextmanager
    async def _spare_reader(self, wanted: bool) -> AsyncIterator[aiosqlite.Connection | None]:
        """Lend an idle heavy reader, or None when none is idle (or none is wanted): nothing waits for one."""
        if not wanted or self._heavy.empty():
            yield None
            return
        async with self._heavy_reader() as reader:
            yield reader

    async def _same_snapshot(self, other: aiosqlite.Connection, version: Any) -> bool:
        """Begin a read on `other`; say whether it sees what the snapshot begun since `version` was read sees.

        SQLite's data version of a connection changes when its read finds another connection's commit: if
        it has not changed from before the first snapshot to inside this one, no commit came between them,
        so both read the same snapshot. Otherwise the read is ended and the caller reads alone.
        """
        await self._between_snapshots()
        await other.execute("BEGIN")
        try:
            await other.execute_fetchall(counts.STATE)  # the read, and with it the snapshot, begins here
            if (await other.execute_fetchall(DATA_VERSION))[0][0] == version:  # type: ignore[index]
                return True
        except BaseException:
            await other.execute("COMMIT")
            raise
        await other.execute("COMMIT")
        return False

    async def _between_snapshots(self) -> None:
        """Nothing; tests commit here, between two readers' snapshots."""

    async def holds(self, table: str, field: str, value: str, within: Mapping[str, str] | None = None) -> bool:
        within = within or {}
        async with self._reader() as db:
            rows = list(await db.execute_fetchall(holds_sql(table, field, within), (value, *within.values())))
        return bool(rows)

    async def histogram(self, query: ListQuery, unit_chars: int) -> list[tuple[str, str, int]]:
        if unit_chars == counts.DAY and counts.servable(query, facets=True) == "":
            # Whole-day buckets over keyed filters: each day's outcomes from the counts (counts.py).
            return counts.merge_histogram_rows(await self._counted(lambda c: counts.histogram_statements(query, c)))
        async with self._heavy_reader() as db:
            sql, params = (await self._searching(db, query)).histogram(query, unit_chars)
            return [(row[0], row[1], row[2]) for row in await db.execute_fetchall(sql, params)]

    async def time_bounds(self, query: ListQuery) -> tuple[str | None, str | None]:
        if query.since is None and query.until is None and counts.servable(query, facets=True) == "":
            # All time over keyed filters: the first and last days from the counts, then only those days read.
            rows = await self._counted(lambda c: counts.bounds_statements(query, c))
            firsts = [row[0] for row in rows if row[0] is not None]
            lasts = [row[1] for row in rows if row[1] is not None]
            return min(firsts, default=None), max(lasts, default=None)
        async with self._heavy_reader() as db:
            sql, params = (await self._searching(db, query)).bounds(query)
            row = list(await db.execute_fetchall(sql, params))[0]
        return row[0], row[1]

    async def fold_counts(self, max_rows: int) -> tuple[int, int | None]:
        """Fold up to `max_rows` more of a counts backlog on the writer thread; return (rows left, counted upto)."""
        assert self._writer is not None, "store is not open"
        return await self._on_writer(self._fold_counts, self._writer, max_rows)

    def _fold_counts(self, db: sqlite3.Connection, max_rows: int) -> tuple[int, int]:
        # A read first: with no backlog, the write lock is not taken at all.
        left, counted = counts.backlog(db)
        if not left:
            return 0, counted
        with self._transaction(db):
            counts.fold_new(db, max_rows, at_least=counts.FOLD_ROWS, pairs_at_least=counts.PAIR_BATCH)
            left, counted = counts.backlog(db)
        return left, counted

    async def index_search(self, max_rows: int) -> tuple[int, int | None]:
        """Index up to `max_rows` more decisions on the writer thread; return (rows left, indexed_upto)."""
        assert self._writer is not None, "store is not open"
        upto, newest = await self._on_writer(self._index_search, self._writer, max_rows)
        return max(newest - upto, 0), upto

    def _index_search(self, db: sqlite3.Connection, max_rows: int) -> tuple[int, int]:
        # A read first: when nothing is new, the write lock is not taken at all.
        upto, newest = db.execute(SELECT_SEARCH_PROGRESS).fetchone()
        newest = newest or 0
        if upto == newest:
            return upto, newest
        with self._transaction(db):
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

    def iter_decisions(self, query: ListQuery, chunk_size: int) -> AsyncIterator[list[bytes]]:
        """Page through matches by keyset on the heavy readers, one per chunk so a slow client holds none."""
        return keyset_chunks(lambda chunk: self._list(self.decisions, chunk, heavy=True), query, chunk_size)
