"""The writer's warm-up at open: it reads the pages it names, and those are the pages a write then touches."""

from __future__ import annotations

import random
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest

from cavra_ingest.core.models import DecisionIn, normalize
from cavra_ingest.settings import Settings, SettingsError
from cavra_ingest.store import cache
from cavra_ingest.store.sqlite.store import SqliteStore
from tests.conftest import decision

SESSIONS, AGENTS = 200, 20


def _syscr() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("syscr:"):
            return int(line.split()[1])
    raise AssertionError("no syscr in /proc/self/io")


# Reading /proc/self/io is itself read calls: taken off each count.
_first = _syscr()
OWN_READS = _syscr() - _first


def read_calls() -> int:
    """Read system calls this process has made: each page SQLite misses in its cache is one pread."""
    return _syscr()


def reads_since(before: int) -> int:
    return read_calls() - before - OWN_READS


def batch(rng: random.Random, size: int, hour: int) -> list[Any]:
    """Decisions with random ids over the known sessions and agents, newer than any stored."""
    rows = []
    for n in range(size):
        s = rng.randrange(SESSIONS)
        did = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        fields = decision(
            decision_id=did,
            correlation_id=f"corr-{did}",
            session_id=f"sess-{s:04d}",
            agent_id=f"agent-{s % AGENTS:02d}",
            repository=f"acme/repo-{s % 7}",
            timestamp=f"2026-03-01T{hour:02d}:{n // 60 % 60:02d}:{n % 60:02d}.{rng.randrange(10**6):06d}+00:00",
        )
        rows.append(normalize(msgspec.convert(fields, DecisionIn), []))
    return rows


@pytest.fixture
async def filled(tmp_path: Path) -> Path:
    """A file of 12,000 decisions (audit-log leaves too) written through the store."""
    path = tmp_path / "w.db"
    store = SqliteStore(path, audit_log=True)
    await store.open()
    rng = random.Random(5)
    try:
        for hour in range(12):
            await store.write(batch(rng, 1000, hour))
    finally:
        await store.close()
    return path


async def reads_of_a_write(path: Path, monkeypatch: pytest.MonkeyPatch, *, warm: bool, seed: int) -> int:
    """Open the store (warmed or not), then count the read calls of one batch of 64 new decisions."""
    if not warm:
        monkeypatch.setattr(cache, "warm", lambda db, kib, sessions=0: [])
    store = SqliteStore(path, audit_log=True)
    await store.open()
    try:
        items = batch(random.Random(seed), 64, 13)
        before = read_calls()
        await store.write(items)
        return reads_since(before)
    finally:
        await store.close()
        monkeypatch.undo()


def reads_of(db: sqlite3.Connection, statements: list[tuple[str, tuple[Any, ...]]]) -> int:
    """Read calls of the statements, run inside a read transaction already started (its start reads a header)."""
    db.execute("BEGIN")
    db.execute("SELECT count(*) FROM activity_decision_counts_state").fetchone()
    try:
        before = read_calls()
        for sql, params in statements:
            db.execute(sql, params).fetchall()
        return reads_since(before)
    finally:
        db.execute("COMMIT")


@pytest.mark.slow
async def test_after_the_warm_up_a_write_reads_almost_nothing_from_the_file(filled, monkeypatch):
    cold = await reads_of_a_write(filled, monkeypatch, warm=False, seed=11)
    # Other new decisions (the same ones again would be duplicates, which insert nothing).
    warmed = await reads_of_a_write(filled, monkeypatch, warm=True, seed=12)
    # Cold, each of 64 random ids and session keys costs its own pages (several per decision); warmed,
    # about one read call for two decisions is left (401 against 32 when this was written).
    assert cold > 64 * 2
    assert warmed * 8 <= cold, (cold, warmed)


@pytest.mark.slow
async def test_every_page_the_warm_up_claims_is_in_the_cache_afterwards(filled):
    db = sqlite3.connect(filled, isolation_level=None)
    try:
        kib = cache.apply(db, None)
        read = cache.warm(db, kib)
        decision_index = cache.index_on(db, "activity_decisions", "decision_id")
        assert decision_index is not None and decision_index.startswith("sqlite_autoindex")
        assert decision_index in read
        assert "idx_activity_decisions_correlation" in read
        assert cache.index_on(db, "audit_leaves", "decision_id") in read
        # Reading each whole random-key index again costs no read call: the warm-up read all of it
        # (a count(*) there would have read the smallest index instead, whatever INDEXED BY named).
        for table, column in cache.RANDOM_KEYS:
            name = cache.index_on(db, table, column)
            assert db.execute(f'SELECT count({column}) FROM {table} INDEXED BY "{name}"').fetchone()[0] > 10_000
            assert reads_of(db, [(f'SELECT count({column}) FROM {table} INDEXED BY "{name}"', ())]) == 0, name
        # And each session's, agent's and repository's newest index entries.
        for column in cache.EDGE_KEYS:
            name = cache.index_on(db, "activity_decisions", column)
            assert any(entry.startswith(f"{name} (") for entry in read)
            keys = db.execute(f"SELECT DISTINCT {column} FROM activity_sessions").fetchall()
            newest = cache.EDGE_NEWEST.format(index=name, column=column)
            assert reads_of(db, [(newest, (key, cache.EDGE_ENTRIES)) for (key,) in keys]) == 0, name
        # The control: an index the warm-up does not claim costs reads.
        assert (
            reads_of(
                db,
                [("SELECT count(timestamp) FROM activity_decisions INDEXED BY idx_activity_decisions_timestamp", ())],
            )
            > 10
        )
    finally:
        db.close()


@pytest.mark.slow
async def test_the_warm_up_is_bounded(filled):
    db = sqlite3.connect(filled)
    try:
        # A cache too small for the random-key indexes: they are not read (they would only churn it).
        read = cache.warm(db, 1024, sessions=0)
        assert read == []
        # Only the newest sessions' keys, as many as asked.
        read = cache.warm(db, 1024, sessions=5)
        keys = {entry.split(" (")[0]: int(entry.split(" (")[1].split()[0]) for entry in read if "keys'" in entry}
        assert keys["idx_activity_decisions_session"] == 5
        assert 1 <= keys["idx_activity_decisions_agent"] <= 5
        assert 1 <= keys["idx_activity_decisions_repository"] <= 5
    finally:
        db.close()


def test_how_many_sessions_are_warmed_is_a_setting():
    assert Settings.from_env({}).store.sqlite_warm_sessions == 10_000
    assert Settings.from_env({"CAVRA_SQLITE_WARM_SESSIONS": "0"}).store.sqlite_warm_sessions == 0
    with pytest.raises(SettingsError, match="CAVRA_SQLITE_WARM_SESSIONS"):
        Settings.from_env({"CAVRA_SQLITE_WARM_SESSIONS": "-1"})
    store = SqliteStore.from_settings(Settings.from_env({"CAVRA_SQLITE_WARM_SESSIONS": "7"}))
    assert store.warm_sessions == 7


@pytest.mark.slow
async def test_auto_size_counts_the_leaves_and_the_warmed_sessions(filled):
    db = sqlite3.connect(filled)
    try:
        decisions = db.execute("SELECT max(rowid) FROM activity_decisions").fetchone()[0]
        leaves = db.execute("SELECT max(rowid) FROM audit_leaves").fetchone()[0]
        assert (decisions, leaves) == (12_000, 11_999)  # leaf indexes start at 0
        assert cache.random_key_bytes(db) == decisions * cache.RANDOM_INDEX_BYTES + leaves * cache.AUDIT_LEAF_BYTES
        # Warmed sessions add their pages, up to the sessions the file holds (SESSIONS here).
        base = cache.auto_bytes(db, 0)
        assert base == cache.FLOOR  # a small file: the floor
        assert cache.random_key_bytes(db) + SESSIONS * cache.EDGE_BYTES + cache.HEADROOM < cache.FLOOR
        big = cache.FLOOR // cache.EDGE_BYTES + 1  # enough sessions to lift the size above the floor
        db.executemany(
            "INSERT INTO activity_sessions (session_id, agent_id, actor, policy_pack, state, started_at,"
            " updated_at, decision_count, blocked_count, approval_required_count, payload)"
            " VALUES (?, 'a', 'ai', 'p', 'active', '2026-03-01', '2026-03-01', 0, 0, 0, '{}')",
            [(f"extra-{n}",) for n in range(big)],
        )
        sessions = db.execute("SELECT max(rowid) FROM activity_sessions").fetchone()[0]
        wanted = cache.random_key_bytes(db) + sessions * cache.EDGE_BYTES + cache.HEADROOM
        assert cache.auto_bytes(db, 10**9) == wanted
        assert cache.auto_bytes(db, 10) == cache.FLOOR  # only as many sessions as are warmed
    finally:
        db.close()


@pytest.mark.slow
async def test_the_audit_log_commits_on_the_writer_connection_and_keeps_its_cache(filled):
    from cavra_ingest.auditlog.log import log_db
    from cavra_ingest.auditlog.tables import INSERT_NODE, SqliteLog

    store = SqliteStore(filled, audit_log=True)
    await store.open()
    rng = random.Random(13)
    try:
        served = log_db(store)
        assert isinstance(served, SqliteLog) and served.writer == store.write_statements

        async def reads_after(log: SqliteLog, level: int) -> int:
            await store.write(batch(rng, 64, 14))  # the cache holds what a batch touches
            await log.write([(INSERT_NODE, [(level, 0, b"\0" * 32)])])
            before = read_calls()
            await store.write(batch(rng, 64, 15))
            return reads_since(before)

        assert await reads_after(served, 61) <= 16  # a split reads a neighbour now and then
        # Another connection's commit makes SQLite drop the writer's whole cache: the next batch reads again.
        apart = SqliteLog(filled, 2000)
        try:
            assert await reads_after(apart, 60) > 64 * 2
        finally:
            await apart.close()
        assert store._writer is not None
        assert store._writer.execute("SELECT count(*) FROM audit_subtrees WHERE level >= 60").fetchone()[0] == 2
    finally:
        await served.close()
        await store.close()
