"""What 025's rule index costs the writer: CPU µs and WAL KiB per decision, with and without it, interleaved.

Usage: python -m bench.rule_index_cost [--batch 100 32] [--decisions 6000] [--repeats 3] [--narrow]
Each repeat runs, on fresh files: the store with everything on (`bench.storelimit`'s store run: counts, pair
rows, session summaries, audit-log leaves) with the index and with it dropped before the first write, then
plain `sqlite3` executemany into the same layout (`bench.storelimit`'s floor) with and without it.
`--narrow`: a third variant, the index replaced by a narrow one, (rule_id, timestamp). Writes
bench/results/rule-index-cost.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
from pathlib import Path
from unittest import mock

from .storelimit import RESULTS, WORK, plain_cpu_us
from .wal import measure

# What each variant does to the migrated file before the first write.
VARIANTS = {
    "": [],
    "_without": ["DROP INDEX idx_activity_decisions_rule"],
    "_narrow": [
        "DROP INDEX idx_activity_decisions_rule",
        "CREATE INDEX idx_rule_narrow ON activity_decisions(rule_id, timestamp)",
    ],
}


def store_run(batch: int, transactions: int, variant: str) -> dict[str, float]:
    def prepare(db: sqlite3.Connection) -> None:
        for statement in VARIANTS[variant]:
            db.execute(statement)

    path = WORK / "rule-cost-store.db"
    return asyncio.run(measure(path, batch, transactions, transactions, audit_log=True, prepare=prepare))


def plain_run(batch: int, transactions: int, variant: str) -> float:
    """bench.storelimit's floor; the migrations followed by the variant's statements."""
    from . import storelimit

    apply = storelimit.apply_migrations

    def apply_then_change(path: Path) -> None:
        apply(path)
        with sqlite3.connect(path) as db:
            for statement in VARIANTS[variant]:
                db.execute(statement)

    with mock.patch.object(storelimit, "apply_migrations", apply_then_change):
        return plain_cpu_us(WORK / "rule-cost-plain.db", batch, transactions, transactions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[100, 32])
    parser.add_argument("--decisions", type=int, default=6000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--narrow", action="store_true", help="also measure a narrow (rule_id, timestamp) index")
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    report: dict[str, object] = {
        "command": "python -m bench.rule_index_cost " + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
        "load_start": os.getloadavg(),
    }
    for batch in args.batch:
        transactions = max(1, args.decisions // batch)
        variants = ["", "_without"] + (["_narrow"] if args.narrow else [])
        runs: dict[str, list[float]] = {
            f"{k}{tail}": [] for tail in variants for k in ("store_cpu", "store_wal", "plain_cpu")
        }
        for _ in range(args.repeats):
            for tail in variants:
                result = store_run(batch, transactions, tail)
                runs["store_cpu" + tail].append(round(result["cpu_us_per_decision"], 1))
                runs["store_wal" + tail].append(round(result["wal_kib_per_decision"], 2))
                runs["plain_cpu" + tail].append(round(plain_run(batch, transactions, tail), 1))
        medians = {name: statistics.median(values) for name, values in runs.items()}
        report[f"batch_{batch}"] = {"medians": medians, "runs": runs}
        print(json.dumps({f"batch_{batch}": report[f"batch_{batch}"]}), flush=True)
    report["load_end"] = os.getloadavg()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "rule-index-cost.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
