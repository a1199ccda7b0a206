"""The store's CPU per decision beside the layout's own floor: plain `sqlite3` into the same file layout.

For each batch size, interleaved and repeated: the SQLite store with everything on (counts, pair rows, sums,
session summaries, the audit log's leaves; `bench.wal.measure`), the same with its folds read back from the
table (the writer's tallies off, batchcounts.py), and plain `executemany` of server-shaped
rows plus one summary upsert per session into a file with the same tables and indexes and no counts
(`bench.ceiling`), each on a fresh file, the same number of decisions after the same warm-up. Both count
the process's CPU (user and system) per decision committed, so the ratio is what the store adds to what
the layout costs by itself: the store-CPU goal (docs/performance.md) is measured against this floor.

`--breakdown` instead splits the store's CPU per decision by statement (and the Python steps between them),
on the writer's connection, at each batch size.

Usage: python -m bench.storelimit [--batch 100 32] [--decisions 10000] [--repeats 3] [--breakdown]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import statistics
import time
from pathlib import Path
from typing import Any

import msgspec

from cavra_ingest.core.models import normalize
from cavra_ingest.store.migrate import apply_migrations
from cavra_ingest.store.sql import INSERT_DECISION
from cavra_ingest.store.sqlite.batchcounts import BatchCounts
from cavra_ingest.store.sqlite.store import SqliteStore

from .ceiling import UPSERT_SUMMARY, summaries
from .rows import decision, row
from .wal import DECODER
from .wal import measure as store_measure

WORK = Path(__file__).parent / "work"
RESULTS = Path(__file__).parent / "results"


def fresh(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def plain_cpu_us(path: Path, batch: int, transactions: int, warmup: int) -> float:
    """CPU µs per decision of plain executemany, one transaction per batch, synchronous=FULL."""
    fresh(path)
    apply_migrations(path)
    db = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=FULL", "temp_store=MEMORY"):
        db.execute(f"PRAGMA {pragma}")
    rng = random.Random(7)
    cpu = 0.0
    try:
        for n in range(warmup + transactions):
            rows = [row(rng, 5000, 300) for _ in range(batch)]
            start = time.process_time()
            db.execute("BEGIN IMMEDIATE")
            db.executemany(INSERT_DECISION, rows)
            db.executemany(UPSERT_SUMMARY, summaries(rows))
            db.execute("COMMIT")
            if n >= warmup:
                cpu += time.process_time() - start
    finally:
        db.close()
    return cpu / (batch * transactions) * 1e6


def store_cpu_us(path: Path, batch: int, transactions: int, *, tallies: bool) -> float:
    """CPU µs per decision of the store with everything on; `tallies` off: every fold reads the table back."""
    saved = BatchCounts.before_insert
    if not tallies:
        BatchCounts.before_insert = lambda self, db: None  # type: ignore[method-assign,assignment,return-value]
    try:
        result = asyncio.run(store_measure(path, batch, transactions, transactions, audit_log=True))
    finally:
        BatchCounts.before_insert = saved  # type: ignore[method-assign]
    return result["cpu_us_per_decision"]


class TimedConnection:
    """The writer's connection, timing each statement's CPU by its first words."""

    def __init__(self, db: sqlite3.Connection, spent: dict[str, float]) -> None:
        self.db, self.spent = db, spent

    def __getattr__(self, name: str) -> object:
        return getattr(self.db, name)

    def _timed(self, run: Any, sql: str, *args: Any) -> Any:
        key = " ".join(sql.split())[:48]
        start = time.process_time()
        try:
            return run(sql, *args)
        finally:
            self.spent[key] = self.spent.get(key, 0.0) + time.process_time() - start

    def execute(self, sql: str, *args: Any) -> Any:
        return self._timed(self.db.execute, sql, *args)

    def executemany(self, sql: str, *args: Any) -> Any:
        return self._timed(self.db.executemany, sql, *args)


async def breakdown(path: Path, batch: int, decisions: int) -> dict[str, float]:
    """CPU µs per decision of each statement the writer runs, everything on; the rest is Python."""
    fresh(path)
    store = SqliteStore(path, audit_log=True)
    await store.open()
    spent: dict[str, float] = {}
    rng = random.Random(7)
    batches = [
        [normalize(DECODER.decode(msgspec.json.encode(decision(rng, 5000, 300))), []) for _ in range(batch)]
        for _ in range(2 * max(1, decisions // batch))
    ]
    half = len(batches) // 2
    try:
        for items in batches[:half]:
            await store.write(items)  # type: ignore[arg-type]
        plain = store._writer
        store._writer = TimedConnection(plain, spent)  # type: ignore[assignment]
        start = time.process_time()
        for items in batches[half:]:
            await store.write(items)  # type: ignore[arg-type]
        total = time.process_time() - start
        store._writer = plain
    finally:
        await store.close()
    n = half * batch
    out = {key: round(value / n * 1e6, 1) for key, value in sorted(spent.items(), key=lambda kv: -kv[1])}
    out["(Python between statements)"] = round((total - sum(spent.values())) / n * 1e6, 1)
    out["(total)"] = round(total / n * 1e6, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[100, 32])
    parser.add_argument("--decisions", type=int, default=10_000, help="measured per run, after as many of warm-up")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--breakdown", action="store_true", help="the store's CPU by statement instead")
    args = parser.parse_args()
    if args.breakdown:
        WORK.mkdir(exist_ok=True)
        for batch in args.batch:
            parts = asyncio.run(breakdown(WORK / "limit-breakdown.db", batch, args.decisions))
            print(f"batch {batch}, CPU µs per decision:")
            for key, value in parts.items():
                print(f"  {value:7.1f}  {key}")
        return
    WORK.mkdir(exist_ok=True)
    report: dict[str, object] = {
        "command": "python -m bench.storelimit " + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
        "load_average_1m": os.getloadavg()[0],
    }
    for batch in args.batch:
        transactions = max(1, args.decisions // batch)
        store_runs, sql_fold_runs, plain_runs = [], [], []
        for _ in range(args.repeats):
            store_runs.append(store_cpu_us(WORK / "limit-store.db", batch, transactions, tallies=True))
            sql_fold_runs.append(store_cpu_us(WORK / "limit-store.db", batch, transactions, tallies=False))
            plain_runs.append(plain_cpu_us(WORK / "limit-plain.db", batch, transactions, transactions))
        store, sql_fold = statistics.median(store_runs), statistics.median(sql_fold_runs)
        plain = statistics.median(plain_runs)
        report[f"batch_{batch}"] = {
            "store_cpu_us": round(store, 1),
            "store_sql_folds_cpu_us": round(sql_fold, 1),
            "plain_cpu_us": round(plain, 1),
            "store_over_plain": round(store / plain, 2),
            "store_runs": [round(v, 1) for v in store_runs],
            "store_sql_folds_runs": [round(v, 1) for v in sql_fold_runs],
            "plain_runs": [round(v, 1) for v in plain_runs],
        }
        print(json.dumps({f"batch_{batch}": report[f"batch_{batch}"]}), flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "storelimit.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
