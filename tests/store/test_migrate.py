"""Migrations: ledger compatible with CAVRA's runner, atomic per file, idempotent."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from cavra_ingest.store.migrate import MigrationError, apply_migrations, migrations_dir, split_statements
from tests.conftest import decision

ALL = sorted(path.name for path in migrations_dir().glob("*.sql"))


def ledger(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [row[0] for row in conn.execute("SELECT id FROM schema_migrations ORDER BY id")]


def test_migrations_apply_once_and_rerun_is_a_no_op(tmp_path):
    db = tmp_path / "a.db"
    assert apply_migrations(db) == ALL
    assert ledger(db) == ALL
    assert ALL[0] == "004_activity_sessions_decisions.sql"
    assert apply_migrations(db) == []
    assert ledger(db) == ALL


def test_a_failing_file_leaves_nothing_and_is_named(tmp_path):
    migrations = tmp_path / "m"
    migrations.mkdir()
    (migrations / "001_ok.sql").write_text("CREATE TABLE ok (x);")
    (migrations / "002_bad.sql").write_text("CREATE TABLE half (x);\nINSERT INTO missing VALUES (1);")
    db = tmp_path / "b.db"
    with pytest.raises(MigrationError, match="002_bad.sql"):
        apply_migrations(db, migrations)
    assert ledger(db) == ["001_ok.sql"]
    with sqlite3.connect(db) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "ok" in tables and "half" not in tables


def test_split_statements_keeps_semicolons_inside_strings_and_triggers():
    script = (
        "INSERT INTO t VALUES ('a;b');\n"
        "CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET x = 1; UPDATE t SET y = 2; END;\n"
        "-- trailing comment"
    )
    assert len(split_statements(script)) == 2


def cavra_laid_database(db: Path) -> None:
    """Lay a file out as CAVRA's own runner leaves it: 004 applied, rows, other products' tables."""
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE schema_migrations (id TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    conn.executescript((migrations_dir() / "004_activity_sessions_decisions.sql").read_text())
    conn.execute("CREATE TABLE evidence_records (id TEXT PRIMARY KEY, body TEXT)")
    conn.execute("INSERT INTO evidence_records VALUES ('ev1', 'kept')")
    for migration_id in ("001_evidence.sql", "004_activity_sessions_decisions.sql"):
        conn.execute("INSERT INTO schema_migrations VALUES (?, '2026-01-01T00:00:00+00:00')", (migration_id,))
    payload = {
        "schema_version": "cavra.decision.v1",
        "decision_id": "dec_cavra0000001",
        "session_id": "sess-cavra",
        "decision": "block",
        "timestamp": "2026-01-01T00:00:00.000000+00:00",
        "tenant_id": "tenant-old",
        "evidence_refs": ["ev1"],
    }
    conn.execute(
        "INSERT INTO activity_decisions (decision_id, session_id, agent_id, actor, repository, policy_pack,"
        " action_type, target, rule_id, decision, severity, timestamp, correlation_id, payload)"
        " VALUES ('dec_cavra0000001', 'sess-cavra', 'agent-old', 'ai-agent', 'local', 'cavra-ai-agent-baseline',"
        " 'read_file', '', 'runtime.default', 'block', 'low', '2026-01-01T00:00:00.000000+00:00', 'corr_1', ?)",
        (json.dumps(payload),),
    )
    session = {"session_id": "sess-cavra", "evidence_refs": ["ev1"], "state": "active"}
    conn.execute(
        "INSERT INTO activity_sessions VALUES ('sess-cavra', 'agent-old', 'ai-agent', 'local',"
        " 'cavra-ai-agent-baseline', 'active', '2026-01-01T00:00:00.000000+00:00',"
        " '2026-01-01T00:00:00.000000+00:00', 1, 1, 0, ?)",
        (json.dumps(session),),
    )
    conn.commit()
    conn.close()


async def test_database_from_cavras_runner_opens_upgrades_and_keeps_working(make_client, tmp_path):
    db = tmp_path / "activity.db"
    cavra_laid_database(db)
    client = await make_client()
    assert ledger(db) == sorted({"001_evidence.sql", *ALL})
    old = await (await client.get("/decisions", params={"tenant_id": "tenant-old"})).json()
    assert [item["decision_id"] for item in old["items"]] == ["dec_cavra0000001"]
    later = decision(session_id="sess-cavra", decision="block", timestamp="2026-01-02T00:00:00Z", evidence_refs=["ev2"])
    assert (await client.post("/decisions", json=later)).status == 200
    session = await (await client.get("/sessions/sess-cavra")).json()
    assert (session["decision_count"], session["blocked_count"]) == (2, 2)
    assert session["started_at"] == "2026-01-01T00:00:00.000000+00:00"
    assert session["evidence_refs"] == ["ev1", "ev2"]
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT body FROM evidence_records").fetchall() == [("kept",)]


@pytest.mark.slow
def test_migrate_command_reports_what_it_applied(tmp_path):
    db = tmp_path / "cli.db"
    command = [sys.executable, "-m", "cavra_ingest", "migrate", "--sqlite", str(db)]
    first = subprocess.run(command, capture_output=True, text=True, check=True)
    assert "004_activity_sessions_decisions.sql" in first.stdout
    second = subprocess.run(command, capture_output=True, text=True, check=True)
    assert "none pending" in second.stdout
    assert ledger(db) == ALL


async def test_postgres_migrations_share_the_ledger_and_rerun_as_no_ops():
    import asyncpg

    from cavra_ingest.store.migrate import apply_postgres_migrations
    from tests.conftest import POSTGRES_URL, drop_schema

    schema = "t_migrate_twice"
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE; CREATE SCHEMA "{schema}"')
        await conn.execute(f'SET search_path TO "{schema}"')
        postgres_files = sorted(path.name for path in migrations_dir("postgres").glob("*.sql"))
        assert await apply_postgres_migrations(conn) == postgres_files
        assert await apply_postgres_migrations(conn) == []
        ledger_ids = [row[0] for row in await conn.fetch("SELECT id FROM schema_migrations ORDER BY id")]
        assert ledger_ids == postgres_files
        # Same file names, same order, on both databases.
        assert postgres_files == ALL
    finally:
        await conn.close()
        await drop_schema(schema)


async def test_a_failing_postgres_file_leaves_nothing_and_is_named(tmp_path):
    import asyncpg

    from cavra_ingest.store.migrate import apply_postgres_migrations
    from tests.conftest import POSTGRES_URL, drop_schema

    migrations = tmp_path / "pg"
    migrations.mkdir()
    (migrations / "001_ok.sql").write_text("CREATE TABLE ok (x int);")
    (migrations / "002_bad.sql").write_text("CREATE TABLE half (x int);\nINSERT INTO missing VALUES (1);")
    schema = "t_migrate_fails"
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE; CREATE SCHEMA "{schema}"')
        await conn.execute(f'SET search_path TO "{schema}"')
        with pytest.raises(MigrationError, match="002_bad.sql"):
            await apply_postgres_migrations(conn, migrations)
        assert [r[0] for r in await conn.fetch("SELECT id FROM schema_migrations")] == ["001_ok.sql"]
        tables = {r[0] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1", schema)}
        assert "ok" in tables and "half" not in tables
    finally:
        await conn.close()
        await drop_schema(schema)
