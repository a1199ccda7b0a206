"""The storage ceiling: plain sqlite3 `executemany` of server-shaped rows, one transaction per batch."""

from __future__ import annotations

import argparse
import json
import random
import re
import sqlite3
import time
from pathlib import Path

from cavra_ingest.store.migrate import apply_migrations
from cavra_ingest.store.sql import INSERT_DECISION

from .rows import row

# Per-batch summary: one upsert per session touched, counts folded in Python first.
UPSERT_SUMMARY = """
INSERT INTO activity_sessions (
    session_id, agent_id, actor, repository, policy_pack, state, started_at, updated_at,
    decision_count, blocked_count, approval_required_count, payload
) VALUES (?, ?, 'ai-agent', ?, 'cavra-ai-agent-baseline', 'active', ?, ?, ?, ?, ?, ?)
ON CONFLICT (session_id) DO UPDATE SET
    agent_id = excluded.agent_id, repository = excluded.repository,
    started_at = min(started_at, excluded.started_at), updated_at = max(updated_at, excluded.updated_at),
    decision_count = decision_count + excluded.decision_count,
    blocked_count = blocked_count + excluded.blocked_count,
    approval_required_count = approval_required_count + excluded.approval_required_count,
    payload = excluded.payload
"""
MIGRATION_006 = Path(__file__).resolve().parent.parent / "migrations" / "sqlite" / "006_query_indexes.sql"
COMPOSITE_INDEX = (
    "CREATE INDEX IF NOT EXISTS idx_bench_agent_decision_time "
    "ON activity_decisions(agent_id, decision, timestamp, decision_id)"
)


def summaries(rows: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
    """Fold a batch into one summary row per session."""
    acc: dict[object, list[object]] = {}
    for r in rows:
        s = acc.get(r[1])
        if s is None:
            s = acc[r[1]] = [r[1], r[2], r[4], r[11], r[11], 0, 0, 0]
        s[5] += 1  # type: ignore[operator]
        s[6] += r[9] == "block"  # type: ignore[operator]
        s[7] += r[9] == "require_approval"  # type: ignore[operator]
        s[3] = min(s[3], r[11])  # type: ignore[type-var]
        s[4] = max(s[4], r[11])  # type: ignore[type-var]
    return [(*s, json.dumps({"session_id": s[0], "decision_count": s[5]})) for s in acc.values()]


def measure(
    path: Path,
    batch: int,
    duration_s: float,
    *,
    synchronous: str = "FULL",
    composite_index: bool = False,
    pragmas: tuple[str, ...] = (),
    without_006: bool = False,
    sessions: int = 5000,
    agents: int = 300,
    seed: int = 1,
) -> dict[str, float]:
    """Commit batches for about duration_s of database time; return rows/s over database time only."""
    if not path.exists():
        apply_migrations(path)
    con = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode=WAL", f"synchronous={synchronous}", "cache_size=-65536", *pragmas):
        con.execute(f"PRAGMA {pragma}")
    if composite_index:
        con.execute(COMPOSITE_INDEX)
    if without_006:
        for name in re.findall(r"CREATE INDEX IF NOT EXISTS (\w+)", MIGRATION_006.read_text()):
            con.execute(f"DROP INDEX IF EXISTS {name}")
    rng = random.Random(seed)
    rows_done, db_time, transactions, cpu = 0, 0.0, 0, 0.0
    while db_time < duration_s:
        rows = [row(rng, sessions, agents) for _ in range(batch)]
        start, start_cpu = time.perf_counter(), time.thread_time()
        con.execute("BEGIN IMMEDIATE")
        con.executemany(INSERT_DECISION, rows)
        con.executemany(UPSERT_SUMMARY, summaries(rows))
        con.execute("COMMIT")
        db_time += time.perf_counter() - start
        cpu += time.thread_time() - start_cpu
        rows_done += batch
        transactions += 1
    con.close()
    return {
        "rows_per_s": rows_done / db_time,
        "rows": rows_done,
        "transactions": transactions,
        "db_time_s": db_time,
        "cpu_share": cpu / db_time,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("db", type=Path)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--synchronous", default="FULL")
    parser.add_argument("--composite-index", action="store_true")
    parser.add_argument("--without-006", action="store_true", help="drop the 006 query indexes: the 004 layout")
    parser.add_argument("--pragma", action="append", default=[], help="extra PRAGMA, e.g. wal_autocheckpoint=10000")
    args = parser.parse_args()
    result = measure(
        args.db,
        args.batch,
        args.duration,
        synchronous=args.synchronous,
        composite_index=args.composite_index,
        pragmas=tuple(args.pragma),
        without_006=args.without_006,
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
