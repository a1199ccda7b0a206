"""The floor of a broad rule's facets read from the table: plain sqlite3 over the covering rule index, one core.

Usage: python -m bench.rule_floor [--db bench/work/rule-floor.db] [--rows 5000000] [--runs 7]
Builds (once) a table of the rule index's columns only, with the read benchmark's population (bench/read_bench.py:
100 sessions per 20,000 rows, each with one agent, repository, tenant, workspace and pack) for --rows decisions,
writing only one action's rows (its 15 rules hold 5 % of them: what `bench.rule_facets`'s broad rule reads)
and every 20th other row. Then times the six GROUP BYs over that range of the index, in CPU of this thread:
what any reading of those matches from the table costs on one core, with no store, Python or HTTP around it.
Writes bench/results/rule-floor.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import time
from pathlib import Path

from bench.read_bench import ACTIONS, OUTCOMES, RARE_OUTCOME, SEVERITIES, Shape, weighted
from cavra_ingest.store.base import FACET_FIELDS

RESULTS = Path(__file__).parent / "results"
COLUMNS = (
    "rule_id, timestamp, decision, severity, repository, agent_id, policy_pack, action_type, tenant_id, workspace_id"
)
ACTION = ACTIONS[0]
RULES = tuple(f"rule.{ACTION}.{i}" for i in range(15))


def build(path: Path, rows: int) -> None:
    shape = Shape(rows)
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    db.execute(f"CREATE TABLE d (id INTEGER PRIMARY KEY, {COLUMNS})")
    rng = random.Random(7)
    insert = f"INSERT INTO d ({COLUMNS}) VALUES ({', '.join('?' * 10)})"
    batch: list[tuple[str, ...]] = []
    for i in range(rows):
        action = ACTIONS[rng.randrange(len(ACTIONS))]
        if action != ACTION and i % 20:
            continue
        window = i // shape.rows_per_window
        session = random.Random(window * shape.sessions_active + rng.randrange(shape.sessions_active))
        agent = f"agent-{session.randrange(shape.agents):04d}"
        repository = f"org-{session.randrange(30)}/repo-{session.randrange(shape.repositories):04d}"
        tenant = f"tenant-{session.randrange(shape.tenants):02d}"
        workspace = f"{tenant}-ws-{session.randrange(5)}"
        pack = f"pack-{session.randrange(8)}"
        outcome = RARE_OUTCOME if rng.random() < 0.01 else weighted(rng, OUTCOMES)
        stamp = f"{i * shape.step_us:020d}"
        rule = f"rule.{action}.{rng.randrange(15)}"
        severity = weighted(rng, SEVERITIES)
        batch.append((rule, stamp, outcome, severity, repository, agent, pack, action, tenant, workspace))
        if len(batch) >= 100_000:
            db.executemany(insert, batch)
            batch = []
    db.executemany(insert, batch)
    db.commit()
    db.execute(f"CREATE INDEX rule_index ON d ({COLUMNS}) WHERE rule_id IS NOT NULL")
    db.commit()
    db.close()


def measure(path: Path, runs: int) -> dict[str, object]:
    db = sqlite3.connect(path)
    where = f"FROM d INDEXED BY rule_index WHERE rule_id IN ({', '.join('?' * len(RULES))}) AND rule_id IS NOT NULL"
    fields: dict[str, float] = {}
    for name in FACET_FIELDS:
        sql = f"SELECT {name}, count(*) {where} GROUP BY {name}"
        db.execute(sql, RULES).fetchall()  # warm
        spent = []
        for _ in range(runs):
            start = time.thread_time()
            db.execute(sql, RULES).fetchall()
            spent.append((time.thread_time() - start) * 1000)
        fields[name] = round(statistics.median(spent), 1)
    start = time.thread_time()
    matches = db.execute(f"SELECT count(*) {where}", RULES).fetchone()[0]
    walk = (time.thread_time() - start) * 1000
    return {
        "matches": matches,
        "group_by_cpu_ms": fields,
        "six_fields_cpu_ms": round(sum(fields.values()), 1),
        "walk_entries_cpu_ms": round(walk, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=Path("bench/work/rule-floor.db"))
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    if not args.db.exists():
        args.db.parent.mkdir(parents=True, exist_ok=True)
        build(args.db, args.rows)
    report = {"command": f"python -m bench.rule_floor --rows {args.rows} --runs {args.runs}", "rows": args.rows}
    report.update(measure(args.db, args.runs))
    report["load_average_1m"] = round(os.getloadavg()[0], 1)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "rule-floor.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
