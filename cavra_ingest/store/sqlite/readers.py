"""The SQLite store's read connections: point readers, heavy readers under a statement deadline, and count
reads taken in one snapshot, split over two readers when one is idle.

Exports, facets and counts get connections of their own (the heavy readers), so they can never take the ones
point reads and pages use; each of their statements stops at the heavy deadline.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from cavra_ingest.store.base import QueryTimeout
from cavra_ingest.store.sqlite import countreads, counts

READERS = 2
# Changes when a connection's new read finds a commit made by another connection since its last read.
DATA_VERSION = "PRAGMA data_version"
# SQLite virtual-machine steps between two looks at a heavy statement's deadline (well under a millisecond).
PROGRESS_STEPS = 10_000
Statements = list[tuple[str, list[Any]]]
Halves = tuple[Statements, Statements]


class Deadline:
    """A heavy reader's statement time limit, checked by SQLite's progress handler on the reader's thread."""

    def __init__(self) -> None:
        self.until = float("inf")

    def __call__(self) -> int:
        # Non-zero makes SQLite abandon the statement with "interrupted".
        return 1 if time.monotonic() > self.until else 0


class Readers:
    """The pools of read-only connections, lent one at a time."""

    def __init__(self, path: Path, busy_timeout_ms: int, heavy_readers: int, heavy_query_timeout_s: float) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self.heavy_readers = max(1, heavy_readers)
        self.heavy_query_timeout_s = heavy_query_timeout_s
        self.points: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        self.heavies: asyncio.Queue[tuple[aiosqlite.Connection, Deadline]] = asyncio.Queue()
        self._all: list[aiosqlite.Connection] = []

    async def open(self) -> None:
        for _ in range(READERS):
            self.points.put_nowait(await self._connect())
        for _ in range(self.heavy_readers):
            reader, deadline = await self._connect(), Deadline()
            await reader.set_progress_handler(deadline, PROGRESS_STEPS)
            self.heavies.put_nowait((reader, deadline))

    async def close(self) -> None:
        for reader in self._all:
            await reader.close()
        self._all.clear()

    async def _connect(self) -> aiosqlite.Connection:
        reader = await aiosqlite.connect(self.path, isolation_level=None)
        await reader.execute(f"PRAGMA busy_timeout={self.busy_timeout_ms}")
        await reader.execute("PRAGMA query_only=1")
        await reader.execute("PRAGMA cache_size=-32768")
        self._all.append(reader)
        return reader

    @asynccontextmanager
    async def point(self) -> AsyncIterator[aiosqlite.Connection]:
        """Lend a reader for a point read or a page."""
        reader = await self.points.get()
        try:
            yield reader
        finally:
            try:
                await self.end_snapshot(reader)
            finally:
                self.points.put_nowait(reader)

    @staticmethod
    async def end_snapshot(reader: aiosqlite.Connection) -> None:
        """End a read transaction a caller left open before the reader is lent again.

        A caller cancelled (client gone) between its BEGIN and COMMIT leaves one; the next borrower's BEGIN
        would fail ("cannot start a transaction within a transaction").
        """
        if reader.in_transaction:
            await asyncio.shield(reader.execute("ROLLBACK"))

    @asynccontextmanager
    async def heavy(self) -> AsyncIterator[aiosqlite.Connection]:
        """Lend a heavy reader with its deadline set; a cancelled caller (client gone) interrupts its statement."""
        try:
            async with asyncio.timeout(self.heavy_query_timeout_s):
                reader, deadline = await self.heavies.get()
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
                await self.end_snapshot(reader)
            finally:
                self.heavies.put_nowait((reader, deadline))

    @asynccontextmanager
    async def spare(self, wanted: bool) -> AsyncIterator[aiosqlite.Connection | None]:
        """Lend an idle heavy reader, or None when none is idle (or none is wanted): nothing waits for one."""
        if not wanted or self.heavies.empty():
            yield None
            return
        async with self.heavy() as reader:
            yield reader

    async def counted(
        self,
        statements: Callable[[int], Statements],
        last: Callable[[bool], Statements] | None = None,
        *,
        pairs: bool = False,
        split: bool = False,
    ) -> list[Any] | None:
        """Run count statements in one read snapshot (uncounted rows are counted from the table).

        None when most of the table is uncounted (counts.PLAIN_FROM): the caller reads the table instead.

        `last`, told whether the statements returned any row, gives more statements to run. `pairs`: the
        statements read pair rows, so the rows above the pairs' watermark are the uncounted ones. `split`:
        the statements may be shared with an idle heavy reader, run at once on both (same snapshot).
        """
        state, lag = (counts.PAIR_STATE, counts.PAIR_READ_LAG) if pairs else (counts.STATE, counts.READ_LAG_ROWS)
        async with self.point() as db:
            counted, newest = (await db.execute_fetchall(state))[0]  # type: ignore[index]
        if (newest or 0) - counted > max(lag, counts.PLAIN_FROM * (newest or 0)):
            return None
        # A backlog (a new or upgraded file, rows CAVRA inserted in bulk) is counted from the table under
        # a heavy reader's time limit while the background folder works through it; a read never waits
        # for the writer.
        backlog = (newest or 0) - counted > lag
        reading = self.heavy() if backlog else self.point()
        async with reading as db, self.spare(split and not backlog) as other:
            # Where the other reader's view of the file stands before this snapshot is taken.
            version = None if other is None else (await other.execute_fetchall(DATA_VERSION))[0][0]  # type: ignore[index]
            # One snapshot: the watermark, the counts and the scans agree even while the writer commits.
            await db.execute("BEGIN")
            try:
                counted = (await db.execute_fetchall(state))[0][0]  # type: ignore[index]
                work = statements(counted)
                if other is not None and len(work) > 1 and await self.same_snapshot(other, version):
                    rows = await both(db, other, (countreads.together(work[0::2]), countreads.together(work[1::2])))
                else:
                    rows = await fetch(db, countreads.together(work))
                rows += await fetch(db, last(bool(rows)) if last is not None else [])
            finally:
                await db.execute("COMMIT")
        return rows

    async def across(self, db: aiosqlite.Connection, alone: Statements, halves: Halves) -> list[Any]:
        """On the heavy reader `db`: `alone`, or its two `halves` at once on `db` and an idle heavy reader, in
        one snapshot (for reads of the table that group every match: on two cores, about half the time).

        Nothing waits for a second reader: when none is idle, or a commit came between the two snapshots,
        `db` reads `alone`.
        """
        async with self.spare(True) as other:
            if other is None:
                return await fetch(db, alone)
            version = (await other.execute_fetchall(DATA_VERSION))[0][0]  # type: ignore[index]
            await db.execute("BEGIN")
            try:
                await db.execute_fetchall(counts.STATE)  # the snapshot begins with the first read
                if await self.same_snapshot(other, version):
                    return await both(db, other, halves)
                return await fetch(db, alone)
            finally:
                await db.execute("COMMIT")

    async def same_snapshot(self, other: aiosqlite.Connection, version: Any) -> bool:
        """Begin a read on `other`; say whether it sees what the snapshot begun since `version` was read sees.

        SQLite's data version of a connection changes when its read finds another connection's commit: if
        it has not changed from before the first snapshot to inside this one, no commit came between them,
        so both read the same snapshot. Otherwise the read is ended and the caller reads alone.
        """
        await self.between_snapshots()
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

    async def between_snapshots(self) -> None:
        """Nothing; tests commit here, between two readers' snapshots."""


async def both(db: aiosqlite.Connection, other: aiosqlite.Connection, halves: Halves) -> list[Any]:
    """Each half on its reader at once; `other`'s read, begun in the same snapshot as `db`'s, ends here."""
    try:
        mine, theirs = await asyncio.gather(fetch(db, halves[0]), fetch(other, halves[1]))
    finally:
        await other.execute("COMMIT")
    return mine + theirs


async def fetch(db: aiosqlite.Connection, statements: Statements) -> list[Any]:
    rows: list[Any] = []
    for sql, params in statements:
        rows.extend(await db.execute_fetchall(sql, params))
    return rows
