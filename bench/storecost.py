"""Where a decision's store cost goes: WAL and CPU per decision with one component of the write left out.

Each variant runs `bench.wal.measure` on a fresh scratch file with one index dropped, the counts, the
session summaries, the audit-log leaves or the time triggers turned off; variants run interleaved, repeated,
and the medians are printed as a table against the full write (`base`) of the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from cavra_ingest.store.sqlite import counts
from cavra_ingest.store.sqlite import writes as sqlite_writes

from .wal import measure

DECISION_INDEXES = (
    "sqlite_autoindex_activity_decisions_1",
    "idx_activity_decisions_timestamp",
    "idx_activity_decisions_agent",
    "idx_activity_decisions_repository",
    "idx_activity_decisions_session",
    "idx_activity_decisions_decision",
    "idx_activity_decisions_policy",
    "idx_activity_decisions_correlation",
)
SESSION_INDEXES = (
    "idx_activity_sessions_agent",
    "idx_activity_sessions_repository",
    "idx_activity_sessions_policy",
    "idx_activity_sessions_state",
    "idx_activity_sessions_updated",
)
TRIGGERS = (
    "trg_activity_decisions_utc_insert",
    "trg_activity_decisions_utc_update",
    "trg_activity_sessions_utc_insert",
    "trg_activity_sessions_utc_update",
    "trg_activity_decision_counts_delete",
    "trg_activity_decision_counts_update",
)
# Statements that take the same parameters and write nothing.
NO_SESSION_UPDATE = "UPDATE activity_sessions SET state = state WHERE 0 AND coalesce(?, ?, ?, ?, ?, ?, ?)"
NO_SESSION_UPSERT = "UPDATE activity_sessions SET state = state WHERE 0 AND coalesce(" + ", ".join("?" * 14) + ")"


def drop(names: tuple[str, ...], kind: str) -> Callable[[sqlite3.Connection], None]:
    def prepare(db: sqlite3.Connection) -> None:
        for name in names:
            if name.startswith("sqlite_autoindex"):
                continue  # a primary key's index cannot be dropped; measured by the rowid-table variant
            db.execute(f"DROP {kind} IF EXISTS {name}")

    return prepare


@contextmanager
def patched(obj: object, name: str, value: object) -> Iterator[None]:
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


@contextmanager
def nothing() -> Iterator[None]:
    yield


def variants() -> dict[str, tuple[Callable[[], object], Callable[[sqlite3.Connection], None] | None, bool]]:
    """name -> (context manager factory, file preparation, audit log on)."""
    table: dict[str, tuple[Callable[[], object], Callable[[sqlite3.Connection], None] | None, bool]] = {
        "base": (nothing, None, False),
        "+audit-log": (nothing, None, True),
        "-counts": (lambda: patched(counts, "fold_new", lambda db, *args, **kwargs: 0), None, False),
        "counts-every-batch": (lambda: patched(counts, "FOLD_ROWS", 1), None, False),
        "counts-at-256": (lambda: patched(counts, "FOLD_ROWS", 256), None, False),
        "counts-at-1024": (lambda: patched(counts, "FOLD_ROWS", 1024), None, False),
        "pairs-at-4000": (lambda: patched(counts, "PAIR_BATCH", 4000), None, False),
        "pairs-at-8000": (lambda: patched(counts, "PAIR_BATCH", 8000), None, False),
        "-pairs": (lambda: patched(counts, "PAIR_BATCH", 1 << 62), None, False),
        "-session-writes": (
            lambda: _both(
                patched(sqlite_writes, "UPDATE_SESSION_COUNTS", NO_SESSION_UPDATE),
                patched(sqlite_writes, "UPSERT_SESSION", NO_SESSION_UPSERT),
            ),
            None,
            False,
        ),
        "-session-indexes": (nothing, drop(SESSION_INDEXES, "INDEX"), False),
        "-triggers": (nothing, drop(TRIGGERS, "TRIGGER"), False),
    }
    for name in DECISION_INDEXES[1:]:
        table["-" + name.removeprefix("idx_activity_")] = (nothing, drop((name,), "INDEX"), False)
    for name in SESSION_INDEXES:
        table["-" + name.removeprefix("idx_activity_")] = (nothing, drop((name,), "INDEX"), False)
    table["-all-secondary-decision-indexes"] = (nothing, drop(DECISION_INDEXES, "INDEX"), False)
    return table


@contextmanager
def _both(a: object, b: object) -> Iterator[None]:
    with a, b:  # type: ignore[attr-defined]
        yield


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("db", type=Path, help="scratch file (replaced)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--decisions", type=int, default=8000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", help="comma-separated variant names (default all)")
    parser.add_argument("--json", type=Path, help="write the raw runs here")
    args = parser.parse_args()
    table = variants()
    names = args.only.split(",") if args.only else list(table)
    if "base" not in names:
        names.insert(0, "base")
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    transactions = max(1, args.decisions // args.batch)
    for _ in range(args.repeats):
        for name in names:
            context, prepare, audit_log = table[name]
            with context():  # type: ignore[attr-defined]
                result = asyncio.run(
                    measure(args.db, args.batch, transactions, transactions, prepare=prepare, audit_log=audit_log)
                )
            runs[name].append(result)
    base_wal = statistics.median(r["wal_kib_per_decision"] for r in runs["base"])
    base_cpu = statistics.median(r["cpu_us_per_decision"] for r in runs["base"])
    print("| variant | WAL KiB/decision | Δ WAL | CPU µs/decision | Δ CPU | CPU runs |")
    print("|---|---:|---:|---:|---:|---|")
    for name in names:
        wal = statistics.median(r["wal_kib_per_decision"] for r in runs[name])
        cpu = statistics.median(r["cpu_us_per_decision"] for r in runs[name])
        each = "/".join(f"{r['cpu_us_per_decision']:.0f}" for r in runs[name])
        print(f"| {name} | {wal:.1f} | {wal - base_wal:+.1f} | {cpu:.0f} | {cpu - base_cpu:+.0f} | {each} |")
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
