"""Apply numbered `.sql` migrations, each in one transaction with its ledger row.

A migration must upgrade every layout CAVRA produces (SPEC §5): its runner's, its current store's (which
creates the tables itself, tenant columns included, without a ledger row), and ours. SQLite has no
`ADD COLUMN IF NOT EXISTS`, so the SQLite runner skips an `ALTER TABLE t ADD [COLUMN] c ...` statement
whose column `t` already has; everything else in a file is plain, idempotent SQL.
"""

from __future__ import annotations

import os
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cavra_ingest.core.models import now_text

CREATE_LEDGER = "CREATE TABLE IF NOT EXISTS schema_migrations (id TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
IS_APPLIED = "SELECT 1 FROM schema_migrations WHERE id = ?"
RECORD_APPLIED = "INSERT INTO schema_migrations (id, applied_at) VALUES (?, ?)"


class MigrationError(Exception):
    """A migration file failed; nothing of it was applied."""

    def __init__(self, migration_id: str, cause: Exception) -> None:
        super().__init__(f"migration {migration_id} failed: {cause}")
        self.migration_id = migration_id


@dataclass(frozen=True)
class Migration:
    id: str
    sql: str


def migrations_dir(dialect: str = "sqlite") -> Path:
    """Find the migration files, packaged or in a source checkout."""
    # Packaged: cavra_ingest/migrations; a checkout: migrations/ beside cavra_ingest/.
    package = Path(__file__).resolve().parents[1]
    packaged = package / "migrations" / dialect
    if packaged.is_dir():
        return packaged
    return package.parent / "migrations" / dialect


def load_migrations(directory: Path) -> list[Migration]:
    """Read `NNN_name.sql` files in order; the ledger id is the file name."""
    return [Migration(path.name, path.read_text()) for path in sorted(directory.glob("*.sql"))]


def split_statements(sql: str) -> list[str]:
    """Split a script into complete statements (semicolons in strings and triggers are kept)."""
    statements: list[str] = []
    buffer = ""
    for piece in sql.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            if buffer.strip(" \t\r\n;"):
                statements.append(buffer)
            buffer = ""
    return statements


_ADD_COLUMN = re.compile(r"^\s*ALTER\s+TABLE\s+\"?(\w+)\"?\s+ADD\s+(?:COLUMN\s+)?\"?(\w+)\"?", re.IGNORECASE | re.ASCII)
_COMMENT = re.compile(r"^\s*--[^\n]*\n", re.MULTILINE)


def has_column(conn: sqlite3.Connection, table: str, column: str) -> bool:
    """Say whether a table already has a column (names compare case-insensitively, as SQLite's)."""
    rows = conn.execute("SELECT name FROM pragma_table_info(?)", (table,)).fetchall()
    return any(row[0].lower() == column.lower() for row in rows)


def needed(conn: sqlite3.Connection, statement: str) -> bool:
    """Say whether a statement has work to do: an ADD COLUMN of a column that exists has none."""
    match = _ADD_COLUMN.match(_COMMENT.sub("", statement))
    return match is None or not has_column(conn, match.group(1), match.group(2))


def create_private(path: Path) -> None:
    """Create a missing database file readable by its owner only; SQLite gives its -wal and -shm the same."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        pass


def apply_migrations(path: Path | str, directory: Path | None = None) -> list[str]:
    """Apply pending migrations to a SQLite file; return the ids applied now."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    create_private(path)
    applied_now: list[str] = []
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(CREATE_LEDGER)
        for migration in load_migrations(directory or migrations_dir()):
            conn.execute("BEGIN IMMEDIATE")
            try:
                # Checked inside the write lock, so two runners never apply a file twice.
                if conn.execute(IS_APPLIED, (migration.id,)).fetchone():
                    conn.execute("ROLLBACK")
                    continue
                for statement in split_statements(migration.sql):
                    if needed(conn, statement):
                        conn.execute(statement)
                conn.execute(RECORD_APPLIED, (migration.id, now_text()))
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise MigrationError(migration.id, exc) from exc
            applied_now.append(migration.id)
    finally:
        conn.close()
    return applied_now


PG_MIGRATION_LOCK = 0x63617672  # advisory lock key: one migration runner per database at a time
PG_IS_APPLIED = "SELECT 1 FROM schema_migrations WHERE id = $1"
PG_RECORD_APPLIED = "INSERT INTO schema_migrations (id, applied_at) VALUES ($1, $2)"


async def apply_postgres_migrations(conn: Any, directory: Path | None = None) -> list[str]:
    """Apply pending migrations over an asyncpg connection; same ledger, same atomicity."""
    applied_now: list[str] = []
    await conn.execute(CREATE_LEDGER)
    for migration in load_migrations(directory or migrations_dir("postgres")):
        try:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", PG_MIGRATION_LOCK)
                if await conn.fetchval(PG_IS_APPLIED, migration.id):
                    continue
                await conn.execute(migration.sql)
                await conn.execute(PG_RECORD_APPLIED, migration.id, now_text())
        except Exception as exc:
            if type(exc).__module__.startswith("asyncpg"):
                raise MigrationError(migration.id, exc) from exc
            raise
        applied_now.append(migration.id)
    return applied_now
