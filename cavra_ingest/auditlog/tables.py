"""The log's tables: the same few queries on each SQL store, and the leaves a writer appends in its own transaction."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cavra_ingest.auditlog import merkle
from cavra_ingest.auditlog.jcs import canonical
from cavra_ingest.core.models import Accepted
from cavra_ingest.core.sqltext import numbered

NEXT_INDEX = "SELECT coalesce(max(leaf_index) + 1, 0) FROM audit_leaves"
INSERT_LEAF = "INSERT INTO audit_leaves (leaf_index, decision_id, leaf_hash) VALUES (?, ?, ?)"
SELECT_LEAF_INDEX = "SELECT leaf_index FROM audit_leaves WHERE decision_id = ?"
SELECT_LEAF_HASHES = "SELECT leaf_hash FROM audit_leaves WHERE leaf_index >= ? AND leaf_index < ? ORDER BY leaf_index"
SELECT_NODE = "SELECT hash FROM audit_subtrees WHERE level = ? AND node_index = ?"
COUNT_NODES = "SELECT level, count(*) FROM audit_subtrees GROUP BY level"
INSERT_NODE = "INSERT INTO audit_subtrees (level, node_index, hash) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"
SELECT_LATEST = "SELECT tree_size, note FROM audit_checkpoints ORDER BY tree_size DESC LIMIT 1"
SELECT_CHECKPOINT = "SELECT note FROM audit_checkpoints WHERE tree_size = ?"
INSERT_CHECKPOINT = (
    "INSERT INTO audit_checkpoints (tree_size, root_hash, note, created_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING"
)


# PostgreSQL (migration 014): writers queue created decisions; one sequencer at a time numbers them.
QUEUE_LEAVES = "INSERT INTO audit_pending (decision_id) SELECT unnest($1::text[])"
SEQUENCER_LOCK = 0x63617673 + 1
SEQUENCER_TURN = "SELECT pg_try_advisory_xact_lock($1, hashtext(current_schema()))"
# Queue order; a queued decision pruned before it was sequenced has no payload and is dropped from the queue.
SELECT_QUEUED = """
SELECT p.seq, p.decision_id, d.payload FROM audit_pending p
LEFT JOIN activity_decisions d ON d.decision_id = p.decision_id ORDER BY p.seq LIMIT $1
"""
DELETE_QUEUED = "DELETE FROM audit_pending WHERE seq = ANY($1::bigint[])"
SELECT_QUEUED_ONE = "SELECT 1 FROM audit_pending WHERE decision_id = $1"
# Leaves numbered per sequencer transaction: bounded so one transaction never holds a huge backlog.
SEQUENCE_BATCH = 10_000


def record_leaf(payload: bytes) -> bytes:
    """Return the leaf hash of a stored record: SHA-256(0x00 || JCS(record))."""
    return merkle.leaf_hash(canonical(payload))


def leaf_rows(start: int, inserts: Sequence[Accepted]) -> list[tuple[int, str, bytes]]:
    """INSERT_LEAF parameters for a batch's created decisions, numbered from `start` in commit order."""
    return [(start + n, item.record.decision_id, record_leaf(item.payload)) for n, item in enumerate(inserts)]


def append_leaves_sqlite(db: sqlite3.Connection, inserts: Sequence[Accepted]) -> None:
    """Append leaves inside the writer's open transaction (BEGIN IMMEDIATE: no other writer in between)."""
    start = db.execute(NEXT_INDEX).fetchone()[0]
    db.executemany(INSERT_LEAF, leaf_rows(start, inserts))


# Runs a list of (statement, rows) in one transaction.
Writer = Callable[[list[tuple[str, list[tuple[Any, ...]]]]], Awaitable[None]]


class SqliteLog:
    """The log's tables in the store's SQLite file, on a connection and thread of their own."""

    def __init__(self, path: Path, busy_timeout_ms: int, writer: Writer | None = None) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        # The store's own writer connection when there is one: a commit from this connection would drop
        # the writer's page cache (SqliteStore.write_statements).
        self.writer = writer
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cavra-audit-log")
        self._db: sqlite3.Connection | None = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute(f"PRAGMA busy_timeout={self.busy_timeout_ms}")
        return self._db

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def fetch(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        return await self._run(lambda: self._conn().execute(sql, params).fetchall())

    async def write(self, statements: list[tuple[str, list[tuple[Any, ...]]]]) -> None:
        if self.writer is not None:
            await self.writer(statements)
            return

        def run() -> None:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                for sql, rows in statements:
                    db.executemany(sql, rows)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

        await self._run(run)

    async def sequence(self) -> int:
        """Number nothing: SQLite's writer gives each leaf its index in the decision's own transaction."""
        return 0

    async def queued(self, decision_id: str) -> bool:
        return False

    async def close(self) -> None:
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._thread.shutdown()


class PostgresLog:
    """The log's tables in the store's PostgreSQL schema, through its pool."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.numbered = numbered

    async def fetch(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in await self.pool.fetch(self.numbered(sql), *params)]

    async def write(self, statements: list[tuple[str, list[tuple[Any, ...]]]]) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            for sql, rows in statements:
                await conn.executemany(self.numbered(sql), rows)

    async def sequence(self) -> int:
        """Give committed, queued decisions their leaves in queue order; return how many (0 when another
        server's sequencer holds the role this round)."""
        total = 0
        while True:
            async with self.pool.acquire() as conn, conn.transaction():
                # One sequencer at a time per schema, whichever server or worker gets the lock; the others skip
                # a turn. Keyed by the schema too: a database-wide key let one schema's sequencer make every
                # other schema's skip its turn.
                if not await conn.fetchval(SEQUENCER_TURN, SEQUENCER_LOCK):
                    return total
                rows = await conn.fetch(SELECT_QUEUED, SEQUENCE_BATCH)
                if not rows:
                    return total
                start = await conn.fetchval(NEXT_INDEX)
                leaves = [(decision_id, record_leaf(payload.encode())) for _, decision_id, payload in rows if payload]
                await conn.executemany(
                    self.numbered(INSERT_LEAF), [(start + n, d, h) for n, (d, h) in enumerate(leaves)]
                )
                await conn.execute(DELETE_QUEUED, [row[0] for row in rows])
            total += len(leaves)
            if len(rows) < SEQUENCE_BATCH:
                return total

    async def queued(self, decision_id: str) -> bool:
        """Say whether a committed decision still waits for the sequencer."""
        return await self.pool.fetchval(SELECT_QUEUED_ONE, decision_id) is not None

    async def close(self) -> None:
        pass
