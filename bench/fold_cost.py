"""What the writer's fold of the counts costs per decision on a loaded file, with and without the sums over
the outcomes (019), on the read benchmark's population (thousands of agents and repositories, ten tenants).

`bench/wal.py` writes 40 repositories and 300 agents without tenants, so a fold there touches few count rows;
this folds FOLD_ROWS-row batches of `bench.read_bench`'s rows into a copy of a loaded file and counts the
fold's CPU time and WAL bytes alone. Variants are interleaved, each on a fresh copy.

Usage: python -m bench.fold_cost bench/work/reads-300000.db [--folds 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import time
from pathlib import Path

from cavra_ingest.store.sqlite import counts

from .read_bench import INSERT, Shape, generate

# ADD_DELTA's statements: day, tenant, any tenant, then (019) the sums per tenant and under any tenant.
VARIANTS = {
    "no sums (018)": (0, 1, 2),
    "sums under any tenant": (0, 1, 2, 4),
    "sums per tenant and any tenant (019)": (0, 1, 2, 3, 4),
}


def measure(template: Path, work: Path, keep: tuple[int, ...], folds: int) -> dict[str, float]:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{work}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(template, work)
    db = sqlite3.connect(work, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    add = [counts.ADD_DELTA[i] for i in keep] + [counts.ADD_DELTA[-1]]
    # Rows after the file's own, in time and ids (another seed: new decision ids).
    rows = generate(Shape(rows=folds * counts.FOLD_ROWS), seed=99)
    cpu = wal = 0.0
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        for _ in range(folds):
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                INSERT.replace("INSERT", "INSERT OR IGNORE", 1), [next(rows) for _ in range(counts.FOLD_ROWS)]
            )
            db.execute("COMMIT")
            before = Path(f"{work}-wal").stat().st_size
            started = time.process_time()
            db.execute("BEGIN IMMEDIATE")
            counted, newest = db.execute(counts.STATE).fetchone()
            db.execute(counts.DELTA, (counted, newest))
            for sql in add:
                db.execute(sql)
            db.execute(counts.SET_STATE, (newest,))
            db.execute("COMMIT")
            cpu += time.process_time() - started
            wal += Path(f"{work}-wal").stat().st_size - before
    finally:
        db.close()
    decisions = folds * counts.FOLD_ROWS
    return {"cpu_us_per_decision": cpu / decisions * 1e6, "wal_kib_per_decision": wal / decisions / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db", type=Path, help="a loaded, counted file (copied, never written)")
    parser.add_argument("--folds", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = args.db.with_name(args.db.stem + "-foldcost.db")
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name, keep in VARIANTS.items():
            runs[name].append(measure(args.db, work, keep, args.folds))
            print(name, json.dumps(runs[name][-1]), flush=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{work}{suffix}").unlink(missing_ok=True)
    report = {
        "command": f"python -m bench.fold_cost bench/work/{args.db.name} --folds {args.folds} --rounds {args.rounds}",
        "load_average_1m": round(os.getloadavg()[0], 1),
        "median": {
            name: {key: round(statistics.median(r[key] for r in rs), 1) for key in rs[0]} for name, rs in runs.items()
        },
        "runs": {name: [{k: round(v, 1) for k, v in r.items()} for r in rs] for name, rs in runs.items()},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
