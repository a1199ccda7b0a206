"""Facets of every single filter and of windows on a loaded file: the pair counts and the cheaper edge plan
against the paths before them, interleaved in one run, each answer checked equal to the other's.

Usage: python -m bench.facets_bench bench/data/reads-5000000.db [--runs 7]
"before" switches the pair rows off (PAIRED empty: a paired filter reads its matches through an index),
reads the per-outcome rows where the sums over the outcomes would do (ROLLED empty) and scans every partial
day at a window's edge as it is (no whole day less the rest). Writes
bench/results/facets-<rows>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import sqlite3
import statistics
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cavra_ingest.store import counts
from cavra_ingest.store.base import ListQuery
from cavra_ingest.store.sqlite import SqliteStore

from .read_bench import PACKS, RESULTS, pick


@contextlib.contextmanager
def before() -> Iterator[None]:
    """The facet paths as they were: no pair rows or sums over the outcomes read, every partial day scanned."""
    paired, rolled, mostly = counts.PAIRED, getattr(counts, "ROLLED", ()), counts._mostly
    counts.PAIRED = ()  # type: ignore[assignment]
    counts.ROLLED = ()  # type: ignore[assignment]
    counts._mostly = lambda start, stop: False  # type: ignore[assignment]
    try:
        yield
    finally:
        counts.PAIRED = paired  # type: ignore[misc]
        counts.ROLLED = rolled  # type: ignore[misc]
        counts._mostly = mostly  # type: ignore[assignment]


def queries(v: dict[str, Any]) -> dict[str, ListQuery]:
    end = datetime.fromisoformat(v["moment"])
    noon = end.replace(hour=12, minute=0, second=0, microsecond=0) - timedelta(days=1)
    text = lambda moment: moment.isoformat(timespec="microseconds")  # noqa: E731
    one = lambda name, *values: ListQuery(equals=((name, values),))  # noqa: E731
    return {
        "all time, unfiltered (the console's default)": ListQuery(),
        "session_id": one("session_id", v["session"]),
        "agent_id": one("agent_id", v["agent"]),
        "repository": one("repository", v["repository"]),
        "policy_pack (1 of 8)": one("policy_pack", v["pack"]),
        "policy_pack, half the rows (4 of 8)": one("policy_pack", *PACKS[:4]),
        "decision=block": one("decision", "block"),
        "severity=low (60 %)": one("severity", "low"),
        "severity=critical": one("severity", "critical"),
        "action_type": one("action_type", v["action"]),
        "tenant_id": one("tenant_id", v["tenant"]),
        "tenant + policy_pack": ListQuery(equals=(("tenant_id", (v["tenant"],)), ("policy_pack", (v["pack"],)))),
        "1 day, ending just before midnight": ListQuery(since=text(end - timedelta(days=1)), until=text(end)),
        "1 day, noon to noon (worst edges)": ListQuery(since=text(noon), until=text(noon + timedelta(days=1))),
        "7 days, noon to noon": ListQuery(since=text(noon - timedelta(days=6)), until=text(noon + timedelta(days=1))),
        "10:00 to 16:00 of one day": ListQuery(
            since=text(noon - timedelta(hours=2)), until=text(noon + timedelta(hours=4))
        ),
    }


async def median_ms(store: SqliteStore, query: ListQuery, runs: int) -> tuple[float, Any]:
    took, answer = [], None
    for _ in range(runs):
        started = time.perf_counter()
        answer = await store.facets(query, 10)
        took.append((time.perf_counter() - started) * 1000)
    return statistics.median(took), answer


async def measure(path: Path, runs: int, only: str | None = None) -> dict[str, Any]:
    store = SqliteStore(path)
    await store.open()
    results: dict[str, Any] = {}
    try:
        for name, query in queries(pick(path)).items():
            if only is not None and only not in name:
                continue
            q = dataclasses.replace(query, with_total=False)
            await store.facets(q, 10)  # warm
            after_ms, after = await median_ms(store, q, runs)
            with before():
                before_ms, old = await median_ms(store, q, runs)
            assert after == old, name
            results[name] = {
                "before_ms": round(before_ms, 1),
                "after_ms": round(after_ms, 1),
                "matches": after.total,
            }
            print(f"{name:40} before {before_ms:9.1f} ms  after {after_ms:7.1f} ms  ({after.total:,})", file=sys.stderr)
    finally:
        await store.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db", type=Path)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--only", help="only the queries whose name contains this")
    args = parser.parse_args()
    rows = asyncio.run(measure(args.db, args.runs, args.only))
    report = {
        "command": " ".join(["python -m bench.facets_bench", f"bench/data/{args.db.name}", *sys.argv[2:]]),
        "load_average_1m": round(os.getloadavg()[0], 1),
        "runs": args.runs,
        "facets_top10_median_ms": rows,
    }
    with sqlite3.connect(args.db) as db:
        total = db.execute("SELECT max(rowid) FROM activity_decisions").fetchone()[0]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"facets-{total}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
