"""A local SQLite file holding every record until the server has answered for it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

CREATE = """
CREATE TABLE IF NOT EXISTS spool (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    decision_id TEXT NOT NULL,
    body BLOB NOT NULL
)
"""
INSERT = "INSERT INTO spool (decision_id, body) VALUES (?, ?)"
SELECT_AFTER = "SELECT seq, decision_id, body FROM spool WHERE seq > ? ORDER BY seq LIMIT ?"
DELETE = "DELETE FROM spool WHERE seq = ?"
COUNT = "SELECT count(*), coalesce(max(seq), 0) FROM spool"


class Spool:
    """One connection, used from one thread at a time (the client's spool executor)."""

    def __init__(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        # Autocommit: each statement is its own transaction, durable (synchronous=FULL) when it returns.
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute(CREATE)

    def add(self, decision_id: str, body: bytes) -> int:
        """Store one record durably and return its sequence number."""
        cursor = self.conn.execute(INSERT, (decision_id, body))
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def after(self, seq: int, limit: int) -> list[tuple[int, str, bytes]]:
        """Return up to `limit` records with a sequence number above `seq`, oldest first."""
        return [(row[0], row[1], bytes(row[2])) for row in self.conn.execute(SELECT_AFTER, (seq, limit))]

    def remove(self, seqs: list[int]) -> None:
        """Forget records the server has answered for, in one transaction."""
        if not seqs:
            return
        self.conn.execute("BEGIN")
        try:
            self.conn.executemany(DELETE, [(seq,) for seq in seqs])
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    def count(self) -> tuple[int, int]:
        """Return how many records are held and the highest sequence number."""
        count, top = self.conn.execute(COUNT).fetchone()
        return int(count), int(top)

    def close(self) -> None:
        self.conn.close()
