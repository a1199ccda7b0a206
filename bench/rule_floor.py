"""The floor of a broad rule's facets read from the table: plain sqlite3 over the covering rule index, one core.

Usage: python -m bench.rule_floor [--db bench/work/rule-floor.db] [--rows 5000000] [--runs 7]
Builds (once) a table of the rule index's columns only, from the read benchmark's own rows (bench/read_bench.py's
generate(): 100 sessions per 20,000 rows, each with one agent, repository, tenant, workspace and pack) for --rows
decisions, writing only one action's rows (its 15 rules hold 5 % of them: what `bench.rule_facets`'s broad rule reads)
and every 20th other row. Then times the six GROUP BYs over that range of the index, in CPU of this thread:
what any reading of those matches from the table costs on one core, with no store, Python or HTTP around it.
Writes bench/results/rule-floor.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import time
from pathlib import Path

from bench.read_bench import ACTIONS, INSERT, Shape, generate
from cavra_ingest.store.base import FACET_FIELDS

RESULTS = Path(__file__).parent / "results"
COLUMNS = (
    "rule_id, timestamp, decision, severity, repository, agent_id, policy_pack, action_type, tenant_id, workspace_id"
)
ACTION = ACTIONS[0]
# Where generate()'s rows (in read_bench.INSERT's column order) hold COLUMNS.
_ORDER = [name.strip() for name in INSERT[INSERT.index("(") + 1 : INSERT.index(")")].split(",")]
PICKED = [_ORDER.index(name.strip()) for name in COLUMNS.split(",")]
ACTION_AT = _ORDER.index("action_type")
RULES = tuple(f"rule.{ACTION}.{i}" for i in range(15))


def build(path: Path, rows: int) -> None:
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    db.execute(f"CREATE TABLE d (id INTEGER PRIMARY KEY, {COLUMNS})")
    insert = f"INSERT INTO d ({COLUMNS}) VALUES ({', '.join('?' * 10)})"
    batch: list[tuple[str, ...]] = []
    for i, row in enumerate(generate(Shape(rows))):
        if row[ACTION_AT] != ACTION and i % 20:
            continue
        batch.append(tuple(row[at] for at in PICKED))
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
