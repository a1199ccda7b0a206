"""The writer's page cache: sized to, and filled at open with, the pages every insert touches."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

MIB = 1024 * 1024
FLOOR = 64 * MIB
CEILING = 2048 * MIB
# Index bytes per decision of the two B-trees keyed by random text, the id and the correlation id
# (~45 and ~30 bytes of entry at the ~70 % fill random inserts leave), rounded up.
RANDOM_INDEX_BYTES = 160
# The audit-log leaves' decision-id index, per leaf (~49 bytes of entry, measured with dbstat).
AUDIT_LEAF_BYTES = 80
# Per warmed session: its newest and oldest session-index leaves and its summary row's page.
EDGE_BYTES = 16 * 1024
HEADROOM = 32 * MIB


def memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 4096 * MIB


def _largest_rowid(db: sqlite3.Connection, table: str) -> int:
    try:
        return int(db.execute(f"SELECT max(rowid) FROM {table}").fetchone()[0] or 0)
    except sqlite3.Error:
        return 0


def random_key_bytes(db: sqlite3.Connection) -> int:
    """What the indexes of random keys take in the cache: the decisions' id and correlation id, the leaves' id."""
    return (
        _largest_rowid(db, "activity_decisions") * RANDOM_INDEX_BYTES
        + _largest_rowid(db, "audit_leaves") * AUDIT_LEAF_BYTES
    )


def auto_bytes(db: sqlite3.Connection, sessions: int = 0) -> int:
    """Derive the cache from the file: its random-key indexes and the warmed sessions' pages, within
    64 MiB..min(2 GiB, RAM/4)."""
    edges = min(_largest_rowid(db, "activity_sessions"), sessions) * EDGE_BYTES
    wanted = random_key_bytes(db) + edges + HEADROOM
    return max(FLOOR, min(wanted, CEILING, memory_bytes() // 4))


def apply(db: sqlite3.Connection, mib: int | None, sessions: int = 0) -> int:
    """Set the connection's cache (SQLite allocates pages only as it reads them); return its size in KiB."""
    kib = mib * 1024 if mib is not None else auto_bytes(db, sessions) // 1024
    db.execute(f"PRAGMA cache_size=-{kib}")
    return kib


# Unique keys that arrive in random order: each insert lands on any leaf of their index, so the whole
# index is read. (table, column): the index is found by its first column, autoindexes included.
RANDOM_KEYS = (
    ("activity_decisions", "decision_id"),
    ("activity_decisions", "correlation_id"),
    ("audit_leaves", "decision_id"),
)
# Indexes led by a session, agent or repository, then the time: an insert lands next to that key's newest
# entry, one leaf per key. Only the keys of the newest sessions are read (CAVRA_SQLITE_WARM_SESSIONS).
EDGE_KEYS = ("session_id", "agent_id", "repository")
# length(payload) reads each row's page(s), which a batch's session upsert reads; the look-up by id below
# reads the id index, which a count answers alone.
RECENT_SESSIONS = (
    "SELECT session_id, agent_id, repository, length(payload) FROM activity_sessions"
    " ORDER BY updated_at DESC, session_id LIMIT ?"
)
EDGE_NEWEST = (
    'SELECT count(*) FROM (SELECT 1 FROM activity_decisions INDEXED BY "{index}" WHERE {column} = ?'
    " ORDER BY timestamp DESC LIMIT ?)"
)
EDGE_OLDEST = (
    'SELECT timestamp FROM activity_decisions INDEXED BY "{index}" WHERE {column} = ? ORDER BY timestamp LIMIT 1'
)
# Entries read at a key's newest end: about two leaves of ~85-byte entries.
EDGE_ENTRIES = 60
# The counts a fold adds to: the all-time rows (span 0) and the newest day's, each field's.
COUNT_ROWS = (
    "SELECT count(n) FROM activity_decision_counts WHERE span = 0 OR (span = 10 AND bucket >= "
    "(SELECT max(bucket) FROM activity_decision_counts WHERE span = 10))"
)


def index_on(db: sqlite3.Connection, table: str, column: str) -> str | None:
    """The name of the table's index whose first column is `column` (None without one)."""
    for row in db.execute("SELECT name FROM pragma_index_list(?)", (table,)).fetchall():
        first = db.execute("SELECT name FROM pragma_index_info(?) WHERE seqno = 0", (row[0],)).fetchone()
        if first and first[0] == column:
            return str(row[0])
    return None


def warm(db: sqlite3.Connection, kib: int, sessions: int = 10_000) -> list[str]:
    """Read into the writer's cache the pages its inserts will touch; return what was read.

    A server starts with a cold cache: without this, each insert's random-key pages, its session's,
    agent's and repository's newest index leaves, the session rows and the counts come one at a time
    from disk (or the OS) for as long as the server runs. The random-key indexes are read whole, in key
    order, only when the cache holds them; the rest only for the `sessions` most recently updated.
    """
    read: list[str] = []
    size = random_key_bytes(db)
    if size and size <= kib * 1024:
        for table, column in RANDOM_KEYS:
            name = index_on(db, table, column)
            if name is not None:
                # count(column), not count(*): SQLite counts rows through the smallest index, whichever is named.
                db.execute(f'SELECT count({column}) FROM {table} INDEXED BY "{name}"').fetchone()
                read.append(name)
    if sessions <= 0:
        return read
    recent = db.execute(RECENT_SESSIONS, (sessions,)).fetchall()
    if not recent:
        return read
    ids = [row[0] for row in recent]
    # The session rows by id, as each batch looks them up.
    db.execute(
        "SELECT count(*) FROM activity_sessions WHERE session_id IN (SELECT value FROM json_each(?))",
        (json.dumps(ids),),
    ).fetchone()
    read.append("activity_sessions")
    for position, column in enumerate(EDGE_KEYS):
        name = index_on(db, "activity_decisions", column)
        if name is None:
            continue
        keys = sorted({row[position] for row in recent if row[position] is not None})
        for key in keys:
            # A key's newest entries: the leaf an insert lands on and the one before it, which a split of
            # the full leaf reads; its oldest entry: the neighbouring key's split reads that leaf.
            db.execute(EDGE_NEWEST.format(index=name, column=column), (key, EDGE_ENTRIES)).fetchone()
            db.execute(EDGE_OLDEST.format(index=name, column=column), (key,)).fetchone()
        read.append(f"{name} ({len(keys)} keys' edges)")
    db.execute(COUNT_ROWS).fetchone()
    read.append("activity_decision_counts")
    return read


def describe(path: Path, kib: int, read: list[str], warmed_s: float) -> str:
    warmed = f", {', '.join(read)} read into it in {warmed_s:.1f} s" if read else ""
    return f"{path}: writer page cache {kib // 1024} MiB{warmed}"
