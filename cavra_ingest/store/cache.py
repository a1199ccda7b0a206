"""The writer's page cache: sized to the indexes that random ids make every insert touch."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

MIB = 1024 * 1024
FLOOR = 64 * MIB
CEILING = 2048 * MIB
# Index bytes per decision of the two B-trees keyed by random text, the id and the correlation id
# (~45 and ~30 bytes of entry at the ~70 % fill random inserts leave), rounded up.
RANDOM_INDEX_BYTES = 160
HEADROOM = 32 * MIB


def parse(text: str) -> int | None:
    """Read CAVRA_SQLITE_CACHE_MB: `auto` (None) or a positive number of MiB; ValueError otherwise."""
    if text.strip().lower() == "auto":
        return None
    try:
        mib = int(text)
    except ValueError:
        raise ValueError(f"expected auto or a number of MiB, got {text!r}") from None
    if mib <= 0:
        raise ValueError(f"expected auto or a positive number of MiB, got {text!r}")
    return mib


def memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 4096 * MIB


def auto_bytes(db: sqlite3.Connection) -> int:
    """Derive the cache from the file: the random-key indexes of its decisions, within 64 MiB..min(2 GiB, RAM/4)."""
    try:
        rows = db.execute("SELECT max(rowid) FROM activity_decisions").fetchone()[0] or 0
    except sqlite3.Error:
        rows = 0
    wanted = rows * RANDOM_INDEX_BYTES + HEADROOM
    return max(FLOOR, min(wanted, CEILING, memory_bytes() // 4))


def apply(db: sqlite3.Connection, mib: int | None) -> int:
    """Set the connection's cache (SQLite allocates pages only as it reads them); return its size in KiB."""
    kib = mib * 1024 if mib is not None else auto_bytes(db) // 1024
    db.execute(f"PRAGMA cache_size=-{kib}")
    return kib


def warm(db: sqlite3.Connection, kib: int) -> bool:
    """Read the random-key indexes into the writer's cache when it can hold them; say whether it did.

    A server starts with a cold cache: without this, each insert's id and correlation-id pages come one
    at a time from disk (or the OS) for as long as the server runs; read in key order they take seconds.
    """
    rows = db.execute("SELECT max(rowid) FROM activity_decisions").fetchone()[0] or 0
    if not rows or rows * RANDOM_INDEX_BYTES > kib * 1024:
        return False
    names = db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'activity_decisions'"
        " AND (sql IS NULL OR name = 'idx_activity_decisions_correlation')"
    ).fetchall()
    for (name,) in names:
        # count(*) through the index reads every page of it, in order, into this connection's cache.
        db.execute(f'SELECT count(*) FROM activity_decisions INDEXED BY "{name}"').fetchone()
    return True


def describe(path: Path, kib: int, warmed_s: float | None) -> str:
    warmed = f", id and correlation indexes read into it in {warmed_s:.1f} s" if warmed_s is not None else ""
    return f"{path}: writer page cache {kib // 1024} MiB{warmed}"
