"""Rule facets before and after 025's rule index, on one file, interleaved run by run.

Usage: python -m bench.rule_facets bench/data/reads-5000000.db [--runs 7]
The file is the read benchmark's (`make bench-reads`), with 025 applied. "before" is the statement the
store ran without the index, on one reader: the rule filter kept off every index (`+rule_id`), so the time
index drives; it cannot read the partial rule index, which only a statement stating its condition may.
"one_reader" reads the rule index on one heavy reader, as before facets read from the table were shared with
an idle second one. "after" is the store as shipped. All through SqliteStore, answers checked equal. Writes
bench/results/rule-facets-ROWS.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bench.read_bench import ACTIONS, pick
from cavra_ingest.store.base import FACET_FIELDS, ListQuery
from cavra_ingest.store.dimensions import DAY
from cavra_ingest.store.sqlite.listings import DECISION_DRIVERS, SteeredListing, decision_listing
from cavra_ingest.store.sqlite.store import SqliteStore

RESULTS = Path(__file__).parent / "results"


def before_listing() -> SteeredListing:
    """The decisions listing as it was before 025: no rule driver for facets or counts."""
    listing = decision_listing()
    listing.facet_drivers = DECISION_DRIVERS
    listing.count_drivers = (*DECISION_DRIVERS, ("decision", True))
    return listing


def rule_queries(v: dict[str, Any]) -> dict[str, ListQuery]:
    noon = datetime.fromisoformat(v["moment"]).replace(hour=12, minute=0, second=0, microsecond=0)
    start, end = (noon - timedelta(days=1)).isoformat(timespec="microseconds"), noon.isoformat(timespec="microseconds")
    rule = (("rule_id", (v["rule"],)),)
    action = v["rule"].split(".")[1]
    assert action in ACTIONS
    return {
        "one rule (the read bench's)": ListQuery(equals=rule),
        "one rule + tenant": ListQuery(equals=(("tenant_id", (v["tenant"],)), *rule)),
        "one rule + decision=block": ListQuery(equals=(*rule, ("decision", ("block",)))),
        "one rule, 1 day noon to noon": ListQuery(equals=rule, since=start, until=end),
        "tenant + block + one rule, 1 day": ListQuery(
            equals=(("tenant_id", (v["tenant"],)), ("decision", ("block",)), *rule), since=start, until=end
        ),
        "3 rules": ListQuery(equals=(("rule_id", tuple(f"rule.{action}.{i}" for i in range(3))),)),
        # A broad rule (as CAVRA's default `runtime.default` may be): one action's 15 rules, 5 % of all.
        "15 rules (one action's)": ListQuery(equals=(("rule_id", tuple(f"rule.{action}.{i}" for i in range(15))),)),
    }


def plan(path: Path, listing: SteeredListing, query: ListQuery) -> str:
    sql, params = listing.facets(query, FACET_FIELDS)
    with sqlite3.connect(path) as db:
        return "; ".join(r[3] for r in db.execute("EXPLAIN QUERY PLAN " + sql, params) if "activity_decisions" in r[3])


@contextmanager
def one_reader(store: SqliteStore, alone: bool) -> Iterator[None]:
    """While `alone`, no second heavy reader is lent: what the store did before it shared table reads."""
    if not alone:
        yield
        return

    @asynccontextmanager
    async def none(wanted: bool) -> AsyncIterator[None]:
        yield None

    lend = store.readers.spare
    store.readers.spare = none  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        store.readers.spare = lend  # type: ignore[method-assign]


async def measure(path: Path, runs: int) -> dict[str, Any]:
    values = pick(path)
    store = SqliteStore(path)
    await store.open()
    after, before = store.decisions, before_listing()
    results: dict[str, Any] = {"values": values, "queries": {}}
    try:
        for name, query in rule_queries(values).items():
            row: dict[str, Any] = {"plan_before": plan(path, before, query), "plan_after": plan(path, after, query)}
            variants = (("before", before, False), ("one_reader", after, False), ("after", after, True))
            samples: dict[str, list[float]] = {label: [] for label, _, _ in variants}
            samples |= {"histogram_before": [], "histogram_after": []}
            answers = {}
            for _ in range(runs + 1):  # the first run of each warms the cache and is dropped
                for label, listing, shared in variants:
                    store.decisions = listing
                    with one_reader(store, not shared):
                        t0 = time.perf_counter()
                        answers[label] = await store.facets(query, 10)
                        samples[label].append((time.perf_counter() - t0) * 1000)
                    if label == "one_reader":
                        continue
                    t0 = time.perf_counter()
                    answers[f"histogram_{label}"] = sorted(await store.histogram(query, DAY))
                    samples[f"histogram_{label}"].append((time.perf_counter() - t0) * 1000)
            store.decisions = after
            assert answers["before"] == answers["after"] == answers["one_reader"], name
            assert answers["histogram_before"] == answers["histogram_after"], name
            row["decisions"] = answers["after"].total
            for label, ms in samples.items():
                kept = ms[1:]
                row[label] = {"median_ms": round(statistics.median(kept), 1), "runs_ms": [round(m, 1) for m in kept]}
            results["queries"][name] = row
            print(
                f"{name:36} {row['decisions']:>8} decisions  facets {row['before']['median_ms']:>7} ->"
                f" {row['one_reader']['median_ms']:>6} -> {row['after']['median_ms']:>6} ms"
                f"  histogram {row['histogram_before']['median_ms']:>7} ->"
                f" {row['histogram_after']['median_ms']:>6} ms",
                file=sys.stderr,
            )
    finally:
        store.decisions = after
        await store.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db", type=Path)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with sqlite3.connect(args.db) as db:
        rows = db.execute("SELECT max(rowid) FROM activity_decisions").fetchone()[0]
        assert db.execute("SELECT 1 FROM sqlite_master WHERE name = 'idx_activity_decisions_rule'").fetchone()
    with open("/proc/loadavg") as f:
        load_start = f.read().split()[:3]
    report = {
        "command": " ".join(["python -m bench.rule_facets", *sys.argv[1:]]),
        "sqlite": sqlite3.sqlite_version,
        "rows": rows,
        "load_start": load_start,
        **asyncio.run(measure(args.db, args.runs)),
    }
    with open("/proc/loadavg") as f:
        report["load_end"] = f.read().split()[:3]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"rule-facets-{rows}.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
