"""Fill a migrated database with N decisions quickly: SQL-generated rows, secondary indexes built after."""

from __future__ import annotations

import argparse
import sqlite3
import time
from pathlib import Path

from cavra_ingest.store.migrate import apply_migrations
from cavra_ingest.store.sqlite import counts, writes

# Ids spread evenly over the key space (random style) or older than any posted id (ordered style),
# inserted in key order so the primary-key index fills sequentially.
RANDOM_ID = "printf('%015x', i * :step) || '-pre-' || printf('%012x', i)"
ORDERED_ID = "printf('%012x-preload0-%08x', 1700000000000 + i, i)"
INSERT_ROWS = """
WITH RECURSIVE n(i) AS (SELECT :first UNION ALL SELECT i + 1 FROM n WHERE i < :last),
r AS (
    SELECT i, {id} AS did, printf('sess-%05d', i % :sessions) AS sid, (i % :sessions) % :agents AS a,
           strftime('%Y-%m-%dT%H:%M:%S', 1767225600 + i / 20, 'unixepoch') || printf('.%06d+00:00', i % 1000000)
           AS ts,
           CASE i % 8 WHEN 4 THEN 'warn' WHEN 5 THEN 'audit_only' WHEN 6 THEN 'block'
                      WHEN 7 THEN 'require_approval' ELSE 'allow' END AS dec
    FROM n
)
INSERT INTO activity_decisions (
    decision_id, session_id, agent_id, actor, repository, policy_pack, action_type, target,
    rule_id, decision, severity, timestamp, correlation_id, payload
)
SELECT did, sid, printf('agent-%03d', a), 'ai-agent', printf('acme/repo-%02d', a % 40), 'cavra-ai-agent-baseline',
       'write_file', printf('src/module_%04d/handler.py', i % 10000), printf('runtime.fs.write.%02d', i % 100),
       dec, 'low', ts, 'corr-' || did,
       json_object('schema_version', 'cavra.decision.v1', 'decision_id', did, 'session_id', sid, 'timestamp', ts,
                   'decision', dec, 'agent_id', printf('agent-%03d', a), 'actor', 'ai-agent',
                   'repository', printf('acme/repo-%02d', a % 40), 'action_type', 'write_file',
                   'target', printf('src/module_%04d/handler.py', i % 10000),
                   'requested_operation', 'edit file and run tests', 'policy_pack', 'cavra-ai-agent-baseline',
                   'policy_id', 'cavra-ai-agent-baseline', 'rule_id', printf('runtime.fs.write.%02d', i % 100),
                   'severity', 'low',
                   'reason', 'write inside the repository working tree is allowed for this agent role',
                   'approver_group', NULL, 'evidence_refs', json_array('ev://runs/' || did || '/step-1'),
                   'correlation_id', 'corr-' || did, 'tool_name', 'editor',
                   'labels', json_object('env', 'ci', 'team', 'platform'))
FROM r
"""
INSERT_SESSIONS = """
INSERT OR REPLACE INTO activity_sessions (
    session_id, agent_id, actor, repository, policy_pack, state, started_at, updated_at,
    decision_count, blocked_count, approval_required_count, payload
)
SELECT session_id, max(agent_id), 'ai-agent', max(repository), 'cavra-ai-agent-baseline', 'active',
       min(timestamp), max(timestamp), count(*), sum(decision = 'block'), sum(decision = 'require_approval'),
       json_object('schema_version', 'cavra.session.v1', 'session_id', session_id, 'agent_id', max(agent_id),
                   'actor', 'ai-agent', 'repository', max(repository), 'policy_pack', 'cavra-ai-agent-baseline',
                   'state', 'active', 'started_at', min(timestamp), 'updated_at', max(timestamp),
                   'decision_count', count(*), 'blocked_count', sum(decision = 'block'),
                   'approval_required_count', sum(decision = 'require_approval'), 'evidence_refs', json_array())
FROM activity_decisions GROUP BY session_id
"""
CHUNK = 500_000


def preload(
    path: Path, rows: int, *, ids: str = "random", sessions: int = 5000, agents: int = 300, page_size: int = 0
) -> None:
    """Create a migrated database at path holding `rows` decisions and their session summaries."""
    if page_size:
        # Only a new file takes a page size: set before the migrations create the tables.
        with sqlite3.connect(path) as con:
            con.execute(f"PRAGMA page_size={int(page_size)}")
            con.execute("VACUUM")
    apply_migrations(path)
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=OFF")
    con.execute("PRAGMA synchronous=OFF")
    con.execute("PRAGMA cache_size=-262144")
    con.execute("PRAGMA temp_store=MEMORY")
    indexes = con.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'activity_decisions'"
        " AND sql IS NOT NULL"
    ).fetchall()
    for name, _ in indexes:
        con.execute(f"DROP INDEX {name}")
    sql = INSERT_ROWS.format(id=RANDOM_ID if ids == "random" else ORDERED_ID)
    step = (1 << 60) // max(rows, 1)
    start = time.monotonic()
    for first in range(0, rows, CHUNK):
        last = min(first + CHUNK, rows) - 1
        params = {"first": first, "last": last, "sessions": sessions, "agents": agents, "step": step}
        con.execute("BEGIN")
        con.execute(sql, params)
        con.execute("COMMIT")
        print(f"  preload: {last + 1:,} rows ({time.monotonic() - start:.0f}s)", flush=True)
    for _, create in indexes:
        con.execute(create)
    print(f"  preload: indexes rebuilt ({time.monotonic() - start:.0f}s)", flush=True)
    con.execute(INSERT_SESSIONS)
    # The decision counts (migration 013) here, not inside a server's start-up deadline.
    counts.catch_up(con)
    print(f"  preload: counts built ({time.monotonic() - start:.0f}s)", flush=True)
    con.execute("PRAGMA journal_mode=WAL")
    con.close()


def build_counts(path: Path) -> None:
    """Fold a pre-loaded file's uncounted decisions into its counts (after a newer migration)."""
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA cache_size=-262144")
    con.execute("PRAGMA temp_store=MEMORY")
    try:
        counts.catch_up(con)
    finally:
        con.close()


def build_search_index(path: Path, chunk: int = 500_000) -> None:
    """Index a pre-loaded file's decisions for search, as a running server's indexer would have.

    A server opened on a backlog spends its writer thread indexing it (5 M rows: about a minute), so
    workload 4 measured on such a file measures the indexer, not the writes (0.04 of the empty file).
    """
    con = sqlite3.connect(path, isolation_level=None)
    try:
        while True:
            upto, newest = writes.index_search(con, chunk)
            if upto >= newest:
                return
    finally:
        con.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("db", type=Path)
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--ids", choices=["random", "ordered"], default="random")
    parser.add_argument("--page-size", type=int, default=0, help="page size of the new file (default SQLite's)")
    args = parser.parse_args()
    preload(args.db, args.rows, ids=args.ids, page_size=args.page_size)


if __name__ == "__main__":
    main()
