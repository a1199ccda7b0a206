"""The SQLite store's connections: WAL, the configured durability, read-only readers."""

from __future__ import annotations

import sqlite3

import pytest

from cavra_ingest.store.sqlite import SqliteStore


async def test_writer_and_readers_are_configured(tmp_path):
    store = SqliteStore(tmp_path / "s.db", synchronous="NORMAL")
    await store.open()
    try:
        writer = store._writer
        assert writer is not None
        assert writer.execute("PRAGMA journal_mode").fetchall() == [("wal",)]
        assert writer.execute("PRAGMA synchronous").fetchall() == [(1,)]
        async with store._reader() as reader:
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
