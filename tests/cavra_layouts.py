"""CAVRA's own file layouts (SPEC §5), built from the contract's facts, with data as CAVRA writes it."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

# CAVRA's 004 indexes, by CAVRA's names: (name, table, column).
CAVRA_INDEXES = (
    ("idx_activity_sessions_agent", "activity_sessions", "agent_id"),
    ("idx_activity_sessions_repository", "activity_sessions", "repository"),
    ("idx_activity_sessions_policy", "activity_sessions", "policy_pack"),
    ("idx_activity_sessions_updated", "activity_sessions", "updated_at"),
    ("idx_activity_decisions_session", "activity_decisions", "session_id"),
    ("idx_activity_decisions_agent", "activity_decisions", "agent_id"),
    ("idx_activity_decisions_repository", "activity_decisions", "repository"),
    ("idx_activity_decisions_policy", "activity_decisions", "policy_pack"),
    ("idx_activity_decisions_decision", "activity_decisions", "decision"),
    ("idx_activity_decisions_timestamp", "activity_decisions", "timestamp"),
)
TENANT_INDEXES = (
    ("idx_activity_sessions_tenant_workspace", "activity_sessions"),
    ("idx_activity_decisions_tenant_workspace", "activity_decisions"),
)
SESSION_COLUMNS = """
    agent_id TEXT NOT NULL, actor TEXT NOT NULL, repository TEXT, policy_pack TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'active', started_at TEXT NOT NULL, updated_at TEXT NOT NULL,
    decision_count INTEGER NOT NULL DEFAULT 0, blocked_count INTEGER NOT NULL DEFAULT 0,
    approval_required_count INTEGER NOT NULL DEFAULT 0, payload TEXT NOT NULL"""
DECISION_COLUMNS = """
    session_id TEXT NOT NULL, agent_id TEXT NOT NULL, actor TEXT NOT NULL, repository TEXT,
    policy_pack TEXT NOT NULL, action_type TEXT NOT NULL, target TEXT NOT NULL DEFAULT '',
    rule_id TEXT NOT NULL, decision TEXT NOT NULL, severity TEXT NOT NULL, timestamp TEXT NOT NULL,
    correlation_id TEXT, payload TEXT NOT NULL"""
OTHER_PRODUCTS = (
    "CREATE TABLE evidence_records (id TEXT PRIMARY KEY, body TEXT)",
    "CREATE TABLE approvals (id TEXT PRIMARY KEY, state TEXT)",
    "CREATE TABLE registry_entries (id TEXT PRIMARY KEY, name TEXT)",
    "CREATE INDEX idx_approvals_state ON approvals(state)",
)
RUNNER_IDS = (
    "001_evidence_records.sql",
    "002_approvals.sql",
    "003_registry.sql",
    "004_activity_sessions_decisions.sql",
    "005_evidence_chain.sql",
    "006_registry_versions.sql",
)


def _decision(n: int, session: str, agent: str, repo: str | None, outcome: str, severity: str, ts: str) -> dict:
    return {
        "schema_version": "cavra.decision.v1",
        "decision_id": f"dec_cavra{n:07d}",
        "session_id": session,
        "timestamp": ts,
        "decision": outcome,
        "agent_id": agent,
        "actor": None,
        "repository": repo,
        "action_type": "execute_command" if n % 2 else "read_file",
        "target": f"target-{n}",
        "requested_operation": None,
        "policy_pack": "cavra-ai-agent-baseline",
        "policy_id": None,
        "rule_id": f"rule.{n}",
        "severity": severity,
        "reason": None,
        "approver_group": None,
        "evidence_refs": [f"ev-{n}"],
        "correlation_id": f"corr_{n}",
    }


# What CAVRA writes (SPEC §5): client-sent timestamp forms, an out-of-enum severity, nulls.
DECISIONS = [
    _decision(1, "sess-a", "agent-1", "acme/api", "block", "high", "2026-04-01T10:00:00Z"),
    # The same instant as dec 1, spelt as `+00:00`: a tie, broken by decision_id ascending.
    _decision(2, "sess-a", "agent-1", "acme/api", "allow", "informational", "2026-04-01T10:00:00+00:00"),
    _decision(3, "sess-a", "agent-1", None, "require_approval", "low", "2026-04-01T12:30:00.5+02:00"),
    _decision(4, "sess-b", "agent-2", "acme/web", "warn", "medium", "2026-04-01T09:59:59.999999Z"),
    _decision(5, "sess-b", "agent-2", "acme/web", "block", "critical", "2026-04-01T11:00:00.123+00:00"),
]
UTC = {
    "dec_cavra0000001": "2026-04-01T10:00:00.000000+00:00",
    "dec_cavra0000002": "2026-04-01T10:00:00.000000+00:00",
    "dec_cavra0000003": "2026-04-01T10:30:00.500000+00:00",
    "dec_cavra0000004": "2026-04-01T09:59:59.999999+00:00",
    "dec_cavra0000005": "2026-04-01T11:00:00.123000+00:00",
}


def _session(session_id: str, agent: str, first: dict, counts: tuple[int, int, int]) -> dict:
    # CAVRA freezes both times at the first decision and keeps only the keys it knows.
    return {
        "schema_version": "cavra.session.v1",
        "session_id": session_id,
        "agent_id": agent,
        "actor": None,
        "repository": None,
        "policy_pack": None,
        "state": "active",
        "started_at": first["timestamp"],
        "updated_at": first["timestamp"],
        "decision_count": counts[0],
        "blocked_count": counts[1],
        "approval_required_count": counts[2],
        "evidence_refs": first["evidence_refs"],
    }


SESSIONS = [
    _session("sess-a", "agent-1", DECISIONS[0], (3, 1, 1)),
    _session("sess-b", "agent-2", DECISIONS[3], (2, 1, 0)),
]


def _tables(conn: sqlite3.Connection, *, tenant: bool) -> None:
    scope = "tenant_id TEXT, workspace_id TEXT," if tenant else ""
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS activity_sessions (session_id TEXT PRIMARY KEY, {scope}{SESSION_COLUMNS})"
    )
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS activity_decisions (decision_id TEXT PRIMARY KEY, {scope}{DECISION_COLUMNS})"
    )
    for name, table, column in CAVRA_INDEXES:
        conn.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {table}({column})")
    if tenant:
        for name, table in TENANT_INDEXES:
            conn.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {table}(tenant_id, workspace_id)")


def cavra_store_opens(conn: sqlite3.Connection) -> None:
    """Do what CAVRA's current store does on open: tables, twelve indexes, then any missing tenant column."""
    _tables(conn, tenant=True)
    for table in ("activity_sessions", "activity_decisions"):
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        for column in ("tenant_id", "workspace_id"):
            if column not in have:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} TEXT")
    conn.commit()


def cavra_writes_decision(conn: sqlite3.Connection, record: dict[str, Any]) -> None:
    """Write a decision as CAVRA's store does: as sent, overwriting in place on the same id."""
    columns = {name: record.get(name) for name in ("decision_id", "session_id", "agent_id", "decision", "severity")}
    conn.execute(
        "INSERT INTO activity_decisions (decision_id, session_id, agent_id, actor, repository, policy_pack,"
        " action_type, target, rule_id, decision, severity, timestamp, correlation_id, payload)"
        " VALUES (:decision_id, :session_id, :agent_id, :actor, :repository, :policy_pack, :action_type,"
        " :target, :rule_id, :decision, :severity, :timestamp, :correlation_id, :payload)"
        " ON CONFLICT (decision_id) DO UPDATE SET timestamp = excluded.timestamp, payload = excluded.payload,"
        " decision = excluded.decision, severity = excluded.severity",
        {
            **columns,
            "actor": record.get("actor") or "ai-agent",
            "repository": record.get("repository"),
            "policy_pack": record.get("policy_pack") or "cavra-ai-agent-baseline",
            "action_type": record.get("action_type") or "unknown",
            "target": record.get("target") or "",
            "rule_id": record.get("rule_id") or "runtime.default",
            "timestamp": record["timestamp"],
            "correlation_id": record.get("correlation_id"),
            "payload": json.dumps(record),
        },
    )


def _cavra_writes_session(conn: sqlite3.Connection, s: dict[str, Any]) -> None:
    conn.execute(
        "INSERT INTO activity_sessions (session_id, agent_id, actor, repository, policy_pack, state, started_at,"
        " updated_at, decision_count, blocked_count, approval_required_count, payload)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            s["session_id"],
            s["agent_id"],
            s["actor"] or "ai-agent",
            s["repository"],
            s["policy_pack"] or "cavra-ai-agent-baseline",
            s["state"],
            s["started_at"],
            s["updated_at"],
            s["decision_count"],
            s["blocked_count"],
            s["approval_required_count"],
            json.dumps(s),
        ),
    )


def _fill(conn: sqlite3.Connection) -> None:
    for record in DECISIONS:
        cavra_writes_decision(conn, record)
    for session in SESSIONS:
        _cavra_writes_session(conn, session)


def _ledger(conn: sqlite3.Connection, ids: tuple[str, ...]) -> None:
    conn.execute("CREATE TABLE schema_migrations (id TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    for migration_id in ids:
        conn.execute("INSERT INTO schema_migrations VALUES (?, '2026-01-01T00:00:00Z')", (migration_id,))


def runner_layout(path: Path) -> None:
    """CAVRA's runner applied its 001-006: other products' tables, 004's tables without tenant columns."""
    conn = sqlite3.connect(path)
    for statement in OTHER_PRODUCTS:
        conn.execute(statement)
    _ledger(conn, RUNNER_IDS)
    _tables(conn, tenant=False)
    _fill(conn)
    conn.commit()
    conn.close()


def current_store_layout(path: Path) -> None:
    """Other products migrated by the runner; the activity tables made by CAVRA's current store."""
    conn = sqlite3.connect(path)
    for statement in OTHER_PRODUCTS:
        conn.execute(statement)
    _ledger(conn, tuple(i for i in RUNNER_IDS if not i.startswith("004")))
    cavra_store_opens(conn)
    _fill(conn)
    conn.commit()
    conn.close()


def store_only_layout(path: Path) -> None:
    """Only CAVRA's current store ever touched the file: no ledger, no other tables."""
    conn = sqlite3.connect(path)
    cavra_store_opens(conn)
    _fill(conn)
    conn.commit()
    conn.close()


def json_layout(path: Path) -> None:
    """CAVRA's JSON store file: its shape, its nulls, its timestamps."""
    path.write_text(json.dumps({"decisions": DECISIONS, "sessions": SESSIONS}, indent=2))


SQLITE_LAYOUTS = {"runner": runner_layout, "current_store": current_store_layout, "store_only": store_only_layout}


def indexes(path: Path) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Map each index of the activity tables to its table and key columns (with order and collation)."""
    conn = sqlite3.connect(path)
    try:
        found = {}
        for name, table in conn.execute(
            "SELECT name, tbl_name FROM sqlite_master WHERE type = 'index' AND tbl_name LIKE 'activity_%'"
        ):
            keys = tuple(
                f"{row[2]}{' DESC' if row[3] else ''}"
                for row in conn.execute(f"PRAGMA index_xinfo({name})")
                if row[5]  # key columns only
            )
            found[name] = (table, keys)
        return found
    finally:
        conn.close()


def duplicate_indexes(path: Path) -> list[list[str]]:
    """Group indexes that cover the same table and columns; each group longer than one is a duplicate."""
    groups: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for name, shape in indexes(path).items():
        groups.setdefault(shape, []).append(name)
    return [sorted(names) for names in groups.values() if len(names) > 1]
