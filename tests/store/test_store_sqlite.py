"""The SQLite store's connections: WAL, the configured durability, read-only readers."""

from __future__ import annotations

import sqlite3

import pytest

from cavra_ingest.store.sqlite.store import SqliteStore


async def test_writer_and_readers_are_configured(tmp_path):
    store = SqliteStore(tmp_path / "s.db", synchronous="NORMAL")
    await store.open()
    try:
        writer = store._writer
        assert writer is not None
        assert writer.execute("PRAGMA journal_mode").fetchall() == [("wal",)]
        assert writer.execute("PRAGMA synchronous").fetchall() == [(1,)]
        async with store.readers.point() as reader:
            with pytest.raises(sqlite3.OperationalError, match="readonly"):
                await reader.execute("DELETE FROM activity_decisions")
    finally:
        await store.close()


async def test_default_durability_is_full(tmp_path):
    store = SqliteStore(tmp_path / "f.db")
    await store.open()
    try:
        assert store._writer is not None
        assert store._writer.execute("PRAGMA synchronous").fetchall() == [(2,)]
    finally:
        await store.close()


async def test_writer_cache_is_derived_from_the_file_or_set(tmp_path, monkeypatch):
    from cavra_ingest.store import cache

    auto = SqliteStore(tmp_path / "a.db")
    await auto.open()
    try:
        assert auto._writer is not None
        # An empty file gets the floor.
        assert auto._writer.execute("PRAGMA cache_size").fetchone()[0] == -cache.FLOOR // 1024
        # A file of 2 M decisions (only the largest rowid is read) gets its random-key indexes' size.
        assert cache.auto_bytes(auto._writer) == cache.FLOOR
        auto._writer.execute(
            "INSERT INTO activity_decisions (rowid, decision_id, session_id, agent_id, actor, policy_pack,"
            " action_type, rule_id, decision, severity, timestamp, payload)"
            " VALUES (2000000, 'x', 's', 'a', 'ai', 'p', 'w', 'r', 'allow', 'low', '2026-03-01T00:00:00Z', '{}')"
        )
        assert cache.auto_bytes(auto._writer) == 2_000_000 * cache.RANDOM_INDEX_BYTES + cache.HEADROOM
        monkeypatch.setattr(cache, "memory_bytes", lambda: 512 * cache.MIB)
        assert cache.auto_bytes(auto._writer) == 128 * cache.MIB  # a quarter of the machine's memory at most
    finally:
        await auto.close()
    fixed = SqliteStore(tmp_path / "f.db", cache_mb=100)
    await fixed.open()
    try:
        assert fixed._writer is not None
        assert fixed._writer.execute("PRAGMA cache_size").fetchone()[0] == -100 * 1024
    finally:
        await fixed.close()


@pytest.mark.parametrize("text", ["0", "-5", "lots"])
def test_a_bad_cache_size_is_refused_at_start(text):
    from cavra_ingest.settings import Settings, SettingsError

    with pytest.raises(SettingsError, match="CAVRA_SQLITE_CACHE_MB"):
        Settings.from_env({"CAVRA_SQLITE_CACHE_MB": text})
    assert Settings.from_env({"CAVRA_SQLITE_CACHE_MB": "512"}).store.sqlite_cache_mb == "512"


async def test_a_new_file_takes_the_page_size_and_an_existing_file_keeps_its_own(tmp_path):
    import os

    from cavra_ingest.settings import Settings

    assert Settings.from_env({}).store.sqlite_page_size == 4096
    path = tmp_path / "p.db"
    created = SqliteStore(path, page_size=2048)
    await created.open()
    await created.close()
    assert os.stat(path).st_mode & 0o777 == 0o600  # created private, as the migrations create a file
    again = SqliteStore(path, page_size=8192)
    await again.open()
    try:
        assert again._writer is not None
        assert again._writer.execute("PRAGMA page_size").fetchone()[0] == 2048
        assert again._writer.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        await again.close()
    default = SqliteStore.from_settings(Settings.from_env({"CAVRA_ACTIVITY_DB": str(tmp_path / "d.db")}))
    await default.open()
    await default.close()
    with sqlite3.connect(tmp_path / "d.db") as db:
        assert db.execute("PRAGMA page_size").fetchone()[0] == 4096


@pytest.mark.parametrize("text", ["0", "1000", "131072", "big"])
def test_a_bad_page_size_is_refused_at_start(text):
    from cavra_ingest.settings import Settings, SettingsError

    with pytest.raises(SettingsError, match="CAVRA_SQLITE_PAGE_SIZE"):
        Settings.from_env({"CAVRA_SQLITE_PAGE_SIZE": text})
    assert Settings.from_env({"CAVRA_SQLITE_PAGE_SIZE": "2048"}).store.sqlite_page_size == 2048


def test_warm_up_reads_the_random_key_indexes_only_into_a_cache_that_holds_them(tmp_path):
    from cavra_ingest.store import cache
    from cavra_ingest.store.migrate import apply_migrations

    path = tmp_path / "w.db"
    apply_migrations(path)
    db = sqlite3.connect(path)
    assert not cache.warm(db, 64 * 1024)  # nothing to read
    db.executemany(
        "INSERT INTO activity_decisions (decision_id, session_id, agent_id, actor, policy_pack, action_type,"
        " rule_id, decision, severity, timestamp, correlation_id, payload)"
        " VALUES (?, 's', 'a', 'ai', 'p', 'w', 'r', 'allow', 'low', '2026-03-01T00:00:00.000000+00:00', ?, '{}')",
        [(f"id-{n}", f"corr-{n}") for n in range(5000)],
    )
    db.commit()
    assert cache.warm(db, 64 * 1024)
    # A cache smaller than the indexes would only churn: no warm-up.
    assert not cache.warm(db, 5000 * cache.RANDOM_INDEX_BYTES // 1024 - 1)
    db.close()


async def test_a_heavy_reader_left_inside_a_transaction_is_rolled_back_before_it_is_lent_again(tmp_path):
    """The same for the heavy readers: a backlog's count read and a window's second reader BEGIN on them."""
    import asyncio

    store = SqliteStore(tmp_path / "t.db", heavy_readers=1)
    await store.open()
    try:
        with pytest.raises(asyncio.CancelledError):
            async with store.readers.heavy() as reader:
                await reader.execute("BEGIN")
                await reader.execute_fetchall("SELECT count(*) FROM activity_decisions")
                raise asyncio.CancelledError
        async with store.readers.heavy() as again:
            assert again is reader and not again.in_transaction
            await again.execute("BEGIN")  # would fail inside the abandoned transaction
            await again.execute("COMMIT")
    finally:
        await store.close()


async def test_a_reader_left_inside_a_transaction_is_rolled_back_before_it_is_lent_again(tmp_path):
    """A caller cancelled (its client gone) after BEGIN but before its COMMIT must not hand the next borrower
    a connection inside a transaction: that one's BEGIN would fail, a 500."""
    import asyncio

    from cavra_ingest.store.base import ListQuery
    from cavra_ingest.store.sqlite.readers import READERS

    store = SqliteStore(tmp_path / "t.db")
    await store.open()
    try:
        with pytest.raises(asyncio.CancelledError):
            async with store.readers.point() as reader:
                await reader.execute("BEGIN")
                await reader.execute("SELECT count(*) FROM activity_decisions")
                raise asyncio.CancelledError  # as a cancelled request is interrupted between the two
        for _ in range(READERS):
            # Every reader in turn: each count read opens its own snapshot with BEGIN.
            assert (await store.facets(ListQuery(), 10)).total == 0
        lent = [store.readers.points.get_nowait() for _ in range(READERS)]
        assert not any(reader.in_transaction for reader in lent)
        for reader in lent:
            store.readers.points.put_nowait(reader)
    finally:
        await store.close()
