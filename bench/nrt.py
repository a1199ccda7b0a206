"""Near-real-time write path, prototyped on the real schema: acknowledge after a log append, merge later.

The acknowledged transaction appends the batch's decisions to a small unindexed log table (plus an index on
its decision_id, for duplicates) and updates the session summaries, as the store does; a merge step moves
the log into `activity_decisions` (and its nine B-trees), folds the counts and empties the log, in large
transactions. WAL and CPU per decision are measured for the acknowledged step alone and for both together,
against the store's own write path on the same workload (`bench.wal`), in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import statistics
import threading
import time
from pathlib import Path

import msgspec

from cavra_ingest.core.models import DecisionIn, normalize
from cavra_ingest.core.planning import decision_ids, plan_batch, session_ids
from cavra_ingest.store.sql import UPSERT_SESSION, decision_row, session_from_row, session_row
from cavra_ingest.store.sqlite import counts
from cavra_ingest.store.sqlite.store import SqliteStore
from cavra_ingest.store.sqlite.writes import (
    SELECT_STORED_SESSIONS,
    UPDATE_SESSION_COUNTS,
    _counts_row,
    _described,
    _stored_described,
)

from .rows import decision
from .wal import fresh, measure

DECODER = msgspec.json.Decoder(DecisionIn)
COLUMNS = (
    "decision_id, session_id, agent_id, actor, repository, policy_pack, action_type, target, rule_id, decision,"
    " severity, timestamp, correlation_id, payload, tenant_id, workspace_id"
)
CREATE_LOG = f"""
CREATE TABLE IF NOT EXISTS activity_decision_log (
    seq INTEGER PRIMARY KEY,
    {", ".join(f"{name} TEXT" for name in COLUMNS.split(", "))}
);
CREATE UNIQUE INDEX IF NOT EXISTS idx_activity_decision_log_id ON activity_decision_log(decision_id);
"""
APPEND = f"INSERT INTO activity_decision_log ({COLUMNS}) VALUES ({', '.join('?' * 16)})"
# A decision is stored when either table holds it.
SELECT_STORED = """
SELECT decision_id, payload FROM activity_decisions WHERE decision_id IN (SELECT value FROM json_each(?1))
UNION ALL
SELECT decision_id, payload FROM activity_decision_log WHERE decision_id IN (SELECT value FROM json_each(?1))
"""
MERGE = (
    f"INSERT INTO activity_decisions ({COLUMNS}) SELECT {COLUMNS} FROM activity_decision_log"
    " WHERE seq <= ? ORDER BY seq"
)
TRIM = "DELETE FROM activity_decision_log WHERE seq <= ?"


class LoggedStore(SqliteStore):
    """The real store, but a batch's decisions go to the log; `merge` moves them into the indexed tables."""

    def _write_batch(self, db: sqlite3.Connection, items: list, abandoned: threading.Event) -> list:  # type: ignore[override]
        db.execute("BEGIN IMMEDIATE")
        try:
            ids = decision_ids(items)
            rows = db.execute(SELECT_STORED, (msgspec.json.encode(ids),)).fetchall()
            stored = {row[0]: row[1].encode() for row in rows}
            rows = db.execute(SELECT_STORED_SESSIONS, (msgspec.json.encode(session_ids(items)),)).fetchall()
            sessions = {row[0]: session_from_row(row) for row in rows}
            described = {row[0]: _stored_described(row) for row in rows}
            plan = plan_batch(items, stored, sessions)
            db.executemany(APPEND, [decision_row(item) for item in plan.inserts])
            same = [s for s in plan.sessions.values() if described.get(s.session_id) == _described(s)]
            db.executemany(UPDATE_SESSION_COUNTS, [_counts_row(s) for s in same])
            changed = [s for s in plan.sessions.values() if described.get(s.session_id) != _described(s)]
            db.executemany(UPSERT_SESSION, [session_row(s) for s in changed])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return plan.results

    def merge(self) -> int:
        """Move the whole log into the indexed tables and the counts in one transaction; return rows moved."""
        db = self._writer
        assert db is not None
        db.execute("BEGIN IMMEDIATE")
        upto = db.execute("SELECT max(seq) FROM activity_decision_log").fetchone()[0]
        if upto is None:
            db.execute("COMMIT")
            return 0
        moved = db.execute(MERGE, (upto,)).rowcount
        db.execute(TRIM, (upto,))
        counts.fold_new(db, pairs_at_least=counts.PAIR_BATCH)
        db.execute("COMMIT")
        return moved


async def logged(
    path: Path, batch: int, transactions: int, merge_rows: int, template: Path | None = None
) -> dict[str, float]:
    """Measure the acknowledged step and the merges apart: WAL bytes and CPU per decision."""
    fresh(path, template)
    store = LoggedStore(path)
    await store.open()
    db = store._writer
    assert db is not None
    db.executescript(CREATE_LOG)
    rng = random.Random(7)

    def accepted_batch() -> list[object]:
        return [normalize(DECODER.decode(msgspec.json.encode(decision(rng, 5000, 300))), []) for _ in range(batch)]

    def wal() -> int:
        return os.path.getsize(f"{path}-wal")

    try:
        for _ in range(transactions):  # warm-up, as bench.wal does
            await store.write(accepted_batch())  # type: ignore[arg-type]
            if db.execute("SELECT count(*) FROM activity_decision_log").fetchone()[0] >= merge_rows:
                store.merge()
        store.merge()
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.execute("PRAGMA wal_autocheckpoint=0")
        ack_cpu = merge_cpu = ack_wal = merge_wal = 0.0
        waiting = merges = 0
        for n in range(transactions):
            items = accepted_batch()
            before, start = wal(), time.process_time()
            await store.write(items)  # type: ignore[arg-type]
            ack_cpu += time.process_time() - start
            ack_wal += wal() - before
            waiting += batch
            if waiting >= merge_rows or n == transactions - 1:
                before, start = wal(), time.process_time()
                store.merge()
                merge_cpu += time.process_time() - start
                merge_wal += wal() - before
                waiting, merges = 0, merges + 1
    finally:
        await store.close()
    decisions = batch * transactions
    return {
        "batch": batch,
        "merge_rows": merge_rows,
        "merges": merges,
        "ack_wal_kib_per_decision": ack_wal / decisions / 1024,
        "ack_cpu_us_per_decision": ack_cpu * 1e6 / decisions,
        "merge_wal_kib_per_decision": merge_wal / decisions / 1024,
        "merge_cpu_us_per_decision": merge_cpu * 1e6 / decisions,
        "total_wal_kib_per_decision": (ack_wal + merge_wal) / decisions / 1024,
        "total_cpu_us_per_decision": (ack_cpu + merge_cpu) * 1e6 / decisions,
    }


# What a listing page would have to do to show unmerged decisions: the indexed table's page, the log's
# matches (scanned: the log has no index but its id's), merged and cut again.
PAGE = "SELECT timestamp, decision_id, payload FROM {table} WHERE {where} ORDER BY timestamp DESC, decision_id LIMIT 50"
UNION_PAGE = (
    "SELECT * FROM (" + PAGE.format(table="activity_decisions", where="{where}") + ") UNION ALL "
    "SELECT * FROM (" + PAGE.format(table="activity_decision_log", where="{where}") + ")"
    " ORDER BY 1 DESC, 2 LIMIT 50"
)
LOG_FACETS = "SELECT agent_id, count(*) FROM activity_decision_log GROUP BY agent_id"


async def read_cost(path: Path, batch: int, waiting: int) -> dict[str, float]:
    """Median ms of a listing page alone and with the log's matches, with `waiting` decisions in the log."""
    store = LoggedStore(path)
    await store.open()
    rng = random.Random(11)
    try:
        for _ in range(max(1, waiting // batch)):
            batch_items = [
                normalize(DECODER.decode(msgspec.json.encode(decision(rng, 5000, 300))), []) for _ in range(batch)
            ]
            await store.write(batch_items)  # type: ignore[arg-type]
        db = sqlite3.connect(path)
        found: dict[str, float] = {"waiting": db.execute("SELECT count(*) FROM activity_decision_log").fetchone()[0]}
        for name, where in (("unfiltered", "1"), ("one agent", "agent_id = 'agent-007'")):
            for label, sql in (("table", PAGE.format(table="activity_decisions", where=where)),
                               ("table+log", UNION_PAGE.format(where=where))):  # fmt: skip
                samples = []
                for _ in range(30):
                    start = time.perf_counter()
                    db.execute(sql).fetchall()
                    samples.append((time.perf_counter() - start) * 1000)
                found[f"{name} page, {label} ms"] = round(statistics.median(samples), 3)
        samples = []
        for _ in range(30):
            start = time.perf_counter()
            db.execute(LOG_FACETS).fetchall()
            samples.append((time.perf_counter() - start) * 1000)
        found["one facet field over the log ms"] = round(statistics.median(samples), 3)
        db.close()
    finally:
        await store.close()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("db", type=Path, help="scratch file (replaced)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--decisions", type=int, default=8000)
    parser.add_argument("--merge-rows", type=int, nargs="+", default=[2048])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--template", type=Path, help="start from a copy of this pre-loaded file (bench/preload.py)")
    args = parser.parse_args()
    transactions = max(1, args.decisions // args.batch)
    runs: dict[str, list[dict[str, float]]] = {"store": []}
    for _ in range(args.repeats):
        runs["store"].append(
            asyncio.run(measure(args.db, args.batch, transactions, transactions, template=args.template))
        )
        for rows in args.merge_rows:
            runs.setdefault(f"log+merge@{rows}", []).append(
                asyncio.run(logged(args.db, args.batch, transactions, rows, args.template))
            )
    for name, results in runs.items():
        medians = {key: statistics.median(r[key] for r in results) for key in results[0]}
        print(json.dumps({"variant": name, **{k: round(v, 1) for k, v in medians.items()}}))
    # The file the last logged run left (log merged): fill the log to just below a merge, then read.
    print(json.dumps(asyncio.run(read_cost(args.db, args.batch, max(args.merge_rows) - args.batch))))


if __name__ == "__main__":
    main()
