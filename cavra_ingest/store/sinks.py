"""The sinks' tables (migrations 021, 024): definitions, cursors per sink, dead letters and a delivery lease.

A position in the committed order is (hi, lo): SQLite (0, rowid); PostgreSQL (transaction id, sequence),
read only below the snapshot's xmin so that a transaction committing late is never skipped (021's comment).
The access events (migration 022) are a second stream with a cursor of its own per sink: SQLite (0, id);
PostgreSQL (transaction id, id), below the xmin likewise (024's comment).
Secrets are sealed with Fernet under a key file kept beside the store, as the audit log keeps its key.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from cavra_ingest.core.models import now_text
from cavra_ingest.core.sinks import DeadLetter, SinkDef
from cavra_ingest.core.sqltext import numbered
from cavra_ingest.settings import Settings
from cavra_ingest.store.sinkaccess import access_rows, access_statement

Position = tuple[int, int]
# (position, payload) of a committed decision.
Row = tuple[Position, bytes]
LAG_COUNT_CAP = 1_000_000

SINK_COLUMNS = "name, kind, target, filter, state, tenant_id, created_at, secret_box IS NOT NULL, events"
INSERT_SINK = (
    "INSERT INTO sinks (name, kind, target, filter, state, tenant_id, secret_box, created_at, events)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING"
)
INSERT_CURSOR = (
    "INSERT INTO sink_cursors (name, pos_hi, pos_lo, caught_up_at, access_hi, access_lo) VALUES (?, ?, ?, ?, ?, ?)"
)
SELECT_SINKS = f"SELECT {SINK_COLUMNS} FROM sinks ORDER BY name"
SELECT_SINK = f"SELECT {SINK_COLUMNS} FROM sinks WHERE name = ?"
SELECT_SECRET = "SELECT secret_box FROM sinks WHERE name = ?"
UPDATE_SINK = "UPDATE sinks SET filter = ?, state = ?, events = ? WHERE name = ?"
DELETE = ("DELETE FROM sinks WHERE name = ?", "DELETE FROM sink_cursors WHERE name = ?",
          "DELETE FROM sink_dead_letters WHERE name = ?", "DELETE FROM sink_leases WHERE name = ?")  # fmt: skip
SELECT_CURSOR = (
    "SELECT pos_hi, pos_lo, delivered, failed, last_error, last_success_at, caught_up_at"
    " FROM sink_cursors WHERE name = ?"
)
# Advanced only after the receiver took the batch: a crash before this line re-sends at most that batch.
# Never backwards: a process that lost its lease mid-batch cannot move the cursor behind its successor's.
ADVANCE = (
    "UPDATE sink_cursors SET pos_hi = ?, pos_lo = ?, delivered = delivered + ?, last_error = NULL,"
    " last_success_at = ?, caught_up_at = CASE WHEN ? THEN ? ELSE caught_up_at END"
    " WHERE name = ? AND (pos_hi < ? OR (pos_hi = ? AND pos_lo <= ?))"
)
SELECT_ACCESS_CURSOR = "SELECT access_hi, access_lo, access_delivered FROM sink_cursors WHERE name = ?"
# The decisions cursor's rules: after the receiver took the batch, never backwards.
ADVANCE_ACCESS = (
    "UPDATE sink_cursors SET access_hi = ?, access_lo = ?, access_delivered = access_delivered + ?,"
    " last_error = NULL, last_success_at = ? WHERE name = ? AND (access_hi < ? OR (access_hi = ? AND access_lo <= ?))"
)
FAILED = "UPDATE sink_cursors SET failed = failed + 1, last_error = ? WHERE name = ?"
CAUGHT_UP = "UPDATE sink_cursors SET caught_up_at = ? WHERE name = ?"
ADD_DEAD = (
    "INSERT INTO sink_dead_letters (name, decision_id, payload, error, attempts, dead_at, stream)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
COUNT_DEAD = "SELECT count(*) FROM sink_dead_letters WHERE name = ?"
SELECT_DEAD = (
    "SELECT id, decision_id, error, attempts, dead_at, payload, stream FROM sink_dead_letters"
    " WHERE name = ? AND id > ? ORDER BY id LIMIT ?"
)
TAKE_DEAD = "SELECT id, payload, stream FROM sink_dead_letters WHERE name = ? ORDER BY id LIMIT ?"
DROP_DEAD = "DELETE FROM sink_dead_letters WHERE name = ? AND id = ?"
# Taken when free, expired or already ours; the holder renews it well before it expires.
TAKE_LEASE = (
    "INSERT INTO sink_leases (name, holder, expires_at) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE"
    " SET holder = excluded.holder, expires_at = excluded.expires_at"
    " WHERE sink_leases.holder = excluded.holder OR sink_leases.expires_at < ?"
)
LEASE_HOLDER = "SELECT holder FROM sink_leases WHERE name = ?"
LIVE_LEASE = "SELECT holder FROM sink_leases WHERE name = ? AND expires_at >= ?"
FREE_LEASE = "DELETE FROM sink_leases WHERE name = ? AND holder = ?"

SQLITE_AFTER = "SELECT 0, rowid, payload FROM activity_decisions WHERE rowid > ? ORDER BY rowid LIMIT ?"
SQLITE_END = "SELECT 0, ifnull(max(rowid), 0) FROM activity_decisions"
SQLITE_LAG = f"SELECT count(*) FROM (SELECT 1 FROM activity_decisions WHERE rowid > ? LIMIT {LAG_COUNT_CAP})"
PG_HORIZON = "pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
PG_AFTER = (
    "SELECT stream_xid, stream_seq, payload FROM activity_decisions WHERE (stream_xid, stream_seq) > ($1, $2)"
    f" AND stream_xid < {PG_HORIZON} ORDER BY stream_xid, stream_seq LIMIT $3"
)
PG_END = (
    "SELECT stream_xid, stream_seq FROM activity_decisions"
    f" WHERE stream_xid < {PG_HORIZON} ORDER BY stream_xid DESC, stream_seq DESC LIMIT 1"
)
PG_LAG = (
    "SELECT count(*) FROM (SELECT 1 FROM activity_decisions WHERE (stream_xid, stream_seq) > ($1, $2)"
    f" LIMIT {LAG_COUNT_CAP}) AS t"
)


class SecretBox:
    """Seals sink secrets with a Fernet key from a 0600 file, made on first use."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fernet: Fernet | None = None

    def _key(self) -> Fernet:
        if self._fernet is None:
            if not self.path.exists():
                self.path.parent.mkdir(parents=True, exist_ok=True)
                try:
                    fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(fd, "wb") as out:
                        out.write(Fernet.generate_key())
                except FileExistsError:
                    pass  # another process made it first
            self._fernet = Fernet(self.path.read_bytes().strip())
        return self._fernet

    def seal(self, secret: str) -> str:
        return self._key().encrypt(secret.encode()).decode()

    def open(self, sealed: str) -> str:
        try:
            return self._key().decrypt(sealed.encode()).decode()
        except InvalidToken:
            raise ValueError(f"a sink secret cannot be opened with the key in {self.path}") from None


def sink_from_row(row: Sequence[Any]) -> SinkDef:
    name, kind, target, filter_, state, tenant_id, created_at, has_secret, events = row
    return SinkDef(name, kind, target, created_at, filter_, state, tenant_id, bool(has_secret), tuple(events.split()))


class SinkTables:
    """The tables on SQLite (short connections on a thread) or PostgreSQL (a small pool of their own)."""

    def __init__(self, settings: Settings, writer: Callable[[Any], Awaitable[None]] | None = None) -> None:
        self.kind = settings.store.kind
        # SQLite: the writer's own connection (SqliteStore.write_statements) for the frequent small writes. A
        # commit from another connection would drop the writer's whole page cache at its next batch.
        self._writer = writer
        self.settings = settings
        self._pool: Any = None
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        key = settings.sinks.sink_key_file
        if key:
            self.box = SecretBox(Path(key))
        elif self.kind == "sqlite":
            self.box = SecretBox(settings.store.path.with_name(settings.store.path.name + ".sink-key"))
        else:
            self.box = SecretBox(Path(".cavra/sink-key"))

    async def open(self) -> None:
        if self.kind == "postgres":
            import asyncpg

            from cavra_ingest.store.postgres.store import schema_name

            schema = schema_name(self.settings.store.postgres_schema)
            self._pool = await asyncpg.create_pool(
                self.settings.store.activity_db, min_size=1, max_size=3, server_settings={"search_path": schema}
            )
        elif self.kind == "sqlite":
            timeout = self.settings.store.sqlite_busy_timeout_ms / 1000
            self._conn = sqlite3.connect(
                self.settings.store.path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
        else:
            raise ValueError("sinks need a SQL store (SQLite or PostgreSQL)")

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        if self._conn is not None:
            with self._lock:
                self._conn.close()
            self._conn = None

    def _sqlite(self, statements: Sequence[tuple[str, tuple[Any, ...]]]) -> tuple[list[Any], int]:
        assert self._conn is not None, "sink tables are not open"
        with self._lock:
            if len(statements) == 1:
                cursor = self._conn.execute(*statements[0])
                return cursor.fetchall(), cursor.rowcount
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                changed = 0
                for sql, params in statements:
                    changed += self._conn.execute(sql, params).rowcount
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            return [], changed

    async def _rows(self, sql: str, *params: Any) -> list[Any]:
        if self._pool is not None:
            return [tuple(row) for row in await self._pool.fetch(sql if "$1" in sql else numbered(sql), *params)]
        rows, _ = await asyncio.to_thread(self._sqlite, [(sql, params)])
        return rows

    async def _run(self, *statements: tuple[str, tuple[Any, ...]]) -> int:
        """Run statements in one transaction; return the rows they changed."""
        if self._pool is not None:
            changed = 0
            async with self._pool.acquire() as conn, conn.transaction():
                for sql, params in statements:
                    status = await conn.execute(numbered(sql), *params)
                    changed += int(status.rsplit(" ", 1)[-1]) if status[-1:].isdigit() else 0
            return changed
        if self._writer is not None:
            await self._writer([(sql, [params]) for sql, params in statements])
            return len(statements)  # the writer reports no counts; callers that need one check first
        _, changed = await asyncio.to_thread(self._sqlite, list(statements))
        return changed

    # Definitions.

    async def create(self, sink: SinkDef, secret: str | None, start: Position, access_start: Position = (0, 0)) -> bool:
        """Add a sink starting after `start` (its access events after `access_start`); False when the name is
        taken (nothing changes)."""
        sealed = self.box.seal(secret) if secret else None
        row = (sink.name, sink.kind, sink.target, sink.filter, sink.state, sink.tenant_id, sealed, sink.created_at,
               " ".join(sink.events))  # fmt: skip
        cursor = (sink.name, start[0], start[1], time.time(), access_start[0], access_start[1])
        if self._pool is not None:
            async with self._pool.acquire() as conn, conn.transaction():
                status = await conn.execute(numbered(INSERT_SINK), *row)
                if not status.endswith(" 1"):
                    return False
                await conn.execute("DELETE FROM sink_cursors WHERE name = $1", sink.name)
                await conn.execute(numbered(INSERT_CURSOR), *cursor)
            return True
        return await asyncio.to_thread(self._sqlite_create, row, cursor)

    def _sqlite_create(self, row: tuple[Any, ...], cursor: tuple[Any, ...]) -> bool:
        assert self._conn is not None, "sink tables are not open"
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                if self._conn.execute(INSERT_SINK, row).rowcount != 1:
                    self._conn.execute("ROLLBACK")
                    return False
                self._conn.execute("DELETE FROM sink_cursors WHERE name = ?", (row[0],))
                self._conn.execute(INSERT_CURSOR, cursor)
                self._conn.execute("COMMIT")
                return True
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    async def all(self) -> list[SinkDef]:
        return [sink_from_row(row) for row in await self._rows(SELECT_SINKS)]

    async def get(self, name: str) -> SinkDef | None:
        rows = await self._rows(SELECT_SINK, name)
        return sink_from_row(rows[0]) if rows else None

    async def secret(self, name: str) -> str | None:
        rows = await self._rows(SELECT_SECRET, name)
        return self.box.open(rows[0][0]) if rows and rows[0][0] else None

    async def update(self, name: str, filter_: str, state: str, events: tuple[str, ...] = ("decisions",)) -> None:
        await self._run((UPDATE_SINK, (filter_, state, " ".join(events), name)))

    async def remove(self, name: str) -> bool:
        if await self.get(name) is None:
            return False
        await self._run(*((sql, (name,)) for sql in DELETE))
        return True

    # Progress.

    async def cursor(self, name: str) -> tuple[Position, int, int, str | None, float | None, float | None] | None:
        rows = await self._rows(SELECT_CURSOR, name)
        if not rows:
            return None
        hi, lo, delivered, failed, error, success, caught_up = rows[0]
        return (int(hi), int(lo)), int(delivered), int(failed), error, success, caught_up

    async def advance(self, name: str, upto: Position, delivered: int, caught_up: bool) -> None:
        now = time.time()
        hi, lo = upto
        await self._run((ADVANCE, (hi, lo, delivered, now, caught_up, now, name, hi, hi, lo)))

    async def access_cursor(self, name: str) -> tuple[Position, int] | None:
        """Where the sink's access events stand, and how many it delivered."""
        rows = await self._rows(SELECT_ACCESS_CURSOR, name)
        return ((int(rows[0][0]), int(rows[0][1])), int(rows[0][2])) if rows else None

    async def advance_access(self, name: str, upto: Position, delivered: int) -> None:
        hi, lo = upto
        await self._run((ADVANCE_ACCESS, (hi, lo, delivered, time.time(), name, hi, hi, lo)))

    async def mark_caught_up(self, name: str) -> None:
        await self._run((CAUGHT_UP, (time.time(), name)))

    async def failed(self, name: str, error: str) -> None:
        await self._run((FAILED, (error[:500], name)))

    async def add_dead(self, name: str, rows: Sequence[tuple[str, bytes, str, int]], stream: str = "decisions") -> None:
        now = now_text()
        await self._run(*((ADD_DEAD, (name, d, p.decode(), e[:500], a, now, stream)) for d, p, e, a in rows))

    async def dead(self, name: str, after: int, limit: int) -> list[DeadLetter]:
        import msgspec

        rows = await self._rows(SELECT_DEAD, name, after, limit)
        return [DeadLetter(int(r[0]), r[1], r[2], int(r[3]), r[4], msgspec.json.decode(r[5]), r[6]) for r in rows]

    async def dead_count(self, name: str) -> int:
        return int((await self._rows(COUNT_DEAD, name))[0][0])

    async def take_dead(self, name: str, limit: int) -> list[tuple[int, bytes, str]]:
        """The oldest dead letters: (id, payload, stream)."""
        return [(int(r[0]), r[1].encode(), r[2]) for r in await self._rows(TAKE_DEAD, name, limit)]

    async def drop_dead(self, name: str, ids: Sequence[int]) -> None:
        if ids:
            await self._run(*((DROP_DEAD, (name, i)) for i in ids))

    # The lease.

    async def take_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        now = time.time()
        await self._run((TAKE_LEASE, (name, holder, now + ttl_s, now)))
        rows = await self._rows(LEASE_HOLDER, name)
        return bool(rows) and rows[0][0] == holder

    async def lease_holder(self, name: str) -> str | None:
        """The process delivering the sink now, if any."""
        rows = await self._rows(LIVE_LEASE, name, time.time())
        return str(rows[0][0]) if rows else None

    async def free_lease(self, name: str, holder: str) -> None:
        await self._run((FREE_LEASE, (name, holder)))

    # The committed log, through the read path (never the writer's connection).

    async def read_after(self, position: Position, limit: int) -> list[Row]:
        if self._pool is not None:
            rows = await self._pool.fetch(PG_AFTER, position[0], position[1], limit)
            return [((int(r[0]), int(r[1])), r[2].encode()) for r in rows]
        rows = await self._rows(SQLITE_AFTER, position[1], limit)
        return [((0, int(r[1])), r[2].encode()) for r in rows]

    async def end(self) -> Position:
        """The position of the newest committed decision (where `"start": "now"` begins)."""
        if self._pool is not None:
            row = await self._pool.fetchrow(PG_END)
            return (int(row[0]), int(row[1])) if row is not None else (0, 0)
        rows = await self._rows(SQLITE_END)
        return 0, int(rows[0][1])

    async def lag(self, position: Position) -> int:
        if self._pool is not None:
            return int(await self._pool.fetchval(PG_LAG, position[0], position[1]))
        return int((await self._rows(SQLITE_LAG, position[1]))[0][0])

    # The access events (migration 022), a tenant sink's alone: the others' are never read for it.

    async def read_access_after(self, position: Position, limit: int, tenant_id: str | None) -> list[Row]:
        postgres = self._pool is not None
        sql, params = access_statement("after", postgres, position, tenant_id, limit)
        return access_rows(await self._pool.fetch(sql, *params) if postgres else await self._rows(sql, *params))

    async def access_end(self) -> Position:
        """The position of the newest committed access event (where `"start": "now"` begins them)."""
        postgres = self._pool is not None
        sql, params = access_statement("end", postgres, (0, 0), None, 1)
        rows = await self._pool.fetch(sql, *params) if postgres else await self._rows(sql, *params)
        return (int(rows[0][0]), int(rows[0][1])) if rows and rows[0][1] is not None else (0, 0)

    async def access_lag(self, position: Position, tenant_id: str | None) -> int:
        postgres = self._pool is not None
        sql, params = access_statement("lag", postgres, position, tenant_id, LAG_COUNT_CAP)
        rows = await self._pool.fetch(sql, *params) if postgres else await self._rows(sql, *params)
        return int(rows[0][0])
