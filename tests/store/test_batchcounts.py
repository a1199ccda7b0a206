"""The writer's tally of its own decisions' pair rows (store/sqlite/batchcounts.py): the folds it makes equal
the declared count rows, and anything it cannot vouch for (another connection's rows, a failed batch, the
background folder) sends the fold back to the table."""

from __future__ import annotations

import random
import sqlite3
import threading

import pytest

from cavra_ingest.store.base import StoreUnavailable
from cavra_ingest.store.sqlite import counts, writes
from cavra_ingest.store.sqlite.store import SqliteStore
from tests.store.test_counts import accepted, cavra_insert, record
from tests.store.test_dimensions import expected, stored

# What the SQL pair fold runs (counts.PAIR_FOLD): the table read back for the pair rows.
SQL_FOLDS = ("FROM activity_decisions AS d, (SELECT 0 AS rollup",)


@pytest.fixture
async def store(tmp_path, monkeypatch):
    # Folds every few batches, as the defaults do every few hundred decisions.
    monkeypatch.setattr(counts, "FOLD_ROWS", 12)
    monkeypatch.setattr(counts, "PAIR_BATCH", 20)
    s = SqliteStore(tmp_path / "tally.db")
    await s.open()
    statements: list[str] = []
    assert s._writer is not None
    s._writer.set_trace_callback(statements.append)
    s.statements = statements  # type: ignore[attr-defined]
    yield s
    await s.close()


def sql_folds(statements: list[str]) -> int:
    return sum(1 for sql in statements if any(mark in sql for mark in SQL_FOLDS))


async def settled(store: SqliteStore, rng: random.Random, first: int, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Write one more batch with every waiting decision folded by it; say whether the counts are as declared."""
    with monkeypatch.context() as m:
        m.setattr(counts, "FOLD_ROWS", 1)
        m.setattr(counts, "PAIR_BATCH", 1)
        await write(store, rng, first, 1)
    return stored(store.path) == expected(store.path)


async def write(store: SqliteStore, rng: random.Random, first: int, count: int, size: int = 5) -> None:
    for start in range(first, first + count, size):
        await store.write([accepted(record(rng, n)) for n in range(start, min(start + size, first + count))])


async def test_the_writers_own_batches_are_folded_from_memory_into_the_declared_rows(store, monkeypatch):
    rng = random.Random(3)
    await write(store, rng, 0, 100)
    folds = [sql for sql in store.statements if "ON CONFLICT DO UPDATE SET n = n + excluded.n" in sql]
    assert folds, "no fold ran"
    # Every fold came from the tallies: the table was never read back for the counts.
    assert sql_folds(store.statements) == 0
    with sqlite3.connect(store.path) as db:
        counted, paired, newest = db.execute(
            "SELECT counted_rowid, paired_rowid, (SELECT max(rowid) FROM activity_decisions)"
            " FROM activity_decision_counts_state"
        ).fetchone()
    assert newest == 100 and counted >= 88 and paired >= 80  # folded as the thresholds say, the rest waits
    assert await settled(store, rng, 100, monkeypatch)
    assert sql_folds(store.statements) == 0


async def test_rows_another_connection_writes_send_the_fold_back_to_the_table(store, monkeypatch):
    rng = random.Random(5)
    await write(store, rng, 0, 30)
    with sqlite3.connect(store.path) as db:
        # Above the watermarks: uncounted rows the tallies know nothing of, and one of the writer's own
        # waiting rows changed in place (no trigger moves counts of uncounted rows).
        cavra_insert(db, "cavra-1", tenant_id="acme", workspace_id="ws-1")
        newest = db.execute("SELECT max(rowid) FROM activity_decisions").fetchone()[0]
        db.execute("UPDATE activity_decisions SET agent_id = 'agent-moved' WHERE rowid = ?", (newest - 1,))
    store.statements.clear()
    await write(store, rng, 30, 40)
    assert sql_folds(store.statements) > 0
    # Caught up, the tallies start again from the new watermarks.
    store.statements.clear()
    await write(store, rng, 70, 60)
    assert sql_folds(store.statements) <= 2  # at most the folds that brought each family level again
    assert await settled(store, rng, 130, monkeypatch)


async def test_a_waiting_row_changed_in_place_by_another_connection_is_counted_as_it_is_now(store, monkeypatch):
    rng = random.Random(6)
    await write(store, rng, 0, 30)
    with sqlite3.connect(store.path) as db:
        # Only SQLite's data version tells the writer: no row was added, the watermarks did not move.
        newest = db.execute("SELECT max(rowid) FROM activity_decisions").fetchone()[0]
        db.execute("UPDATE activity_decisions SET agent_id = 'agent-moved' WHERE rowid = ?", (newest,))
    assert await settled(store, rng, 30, monkeypatch)


async def test_a_failed_batch_leaves_no_trace_in_the_tallies(store, monkeypatch):
    rng = random.Random(7)
    await write(store, rng, 0, 18)
    abandoned = threading.Event()
    abandoned.set()  # the batch is given up on before it commits: rolled back whole
    # One decision: the tally takes it in, no fold runs (19 wait, under 20), then the batch is rolled back.
    items = [accepted(record(rng, 18))]
    with pytest.raises(StoreUnavailable):
        await store._on_writer(writes.write_batch, store._writer, items, abandoned, False, store._batch_counts)
    await write(store, rng, 30, 50)
    assert await settled(store, rng, 80, monkeypatch)


async def test_the_background_folder_and_the_tallies_take_turns(store, monkeypatch):
    rng = random.Random(9)
    with sqlite3.connect(store.path) as db:
        for n in range(40):
            cavra_insert(db, f"cavra-{n:02d}", tenant_id=rng.choice(("acme", None)))
    await write(store, rng, 0, 10)
    while (await store.fold_counts(15))[0]:
        pass
    await write(store, rng, 10, 90)
    assert await settled(store, rng, 100, monkeypatch)
