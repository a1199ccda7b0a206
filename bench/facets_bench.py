"""Facets of every single filter and of windows on a loaded file: the current paths against those before
them, interleaved run by run, each answer checked equal to the others'.

Usage: python -m bench.facets_bench bench/data/reads-5000000.db [--runs 7]
"before" is the code before 019 and 020: pair rows of policy pack, severity and action type only (a
workspace or a rule reads its matches), no sums over the outcomes (the per-outcome rows summed), and each
partial day of a window read once, grouped six ways on one reader. "one reader" is the current code with
the statements of a window's partial days run on one reader, not shared with a second. Writes
bench/results/facets-<rows>.json with every run's figure.
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

from cavra_ingest.store.base import FACET_FIELDS, ListQuery
from cavra_ingest.store.sqlite import countplan, countreads
from cavra_ingest.store.sqlite.store import SqliteStore

from .read_bench import PACKS, RESULTS, pick


def read_once(query: ListQuery, counted: int) -> list[tuple[str, list[Any]]]:
    """Facet rows of the partial days and the uncounted rows as before 020: each range read once, grouped six ways."""
    picked = ", ".join(FACET_FIELDS)
    statements = []
    for w, ps, sign in countplan._scans(query, countplan.plan(query.since, query.until), counted):
        grouped = " UNION ALL ".join(
            f"SELECT '{name}', ifnull('=' || {name}, ''), {sign} * count(*) FROM rows GROUP BY {name}"
            for name in FACET_FIELDS
        )
        statements.append((f"WITH rows AS MATERIALIZED (SELECT {picked} FROM activity_decisions{w}) {grouped}", ps))
    return countreads.together(statements)


@contextlib.contextmanager
def mode(name: str) -> Iterator[None]:
    """Switch the facet paths to those of `name` ("after", "one reader" or "before")."""
    paired, rolled, scans = countplan.PAIRED, countreads.ROLLED, countreads.facet_scans
    if name == "before":
        countplan.PAIRED = paired[:3]  # type: ignore[assignment]
        countreads.ROLLED = ()  # type: ignore[assignment]
        countreads.facet_scans = read_once  # type: ignore[assignment]
    elif name == "one reader":
        # One statement: nothing to share with a second reader.
        countreads.facet_scans = lambda query, counted: countreads.together(scans(query, counted))  # type: ignore[assignment]
    try:
        yield
    finally:
        countplan.PAIRED = paired  # type: ignore[misc]
        countreads.ROLLED = rolled  # type: ignore[misc]
        countreads.facet_scans = scans  # type: ignore[assignment]


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
        "last 24 h at 13:37 (a live console)": ListQuery(
            since=text(noon + timedelta(hours=1, minutes=37) - timedelta(days=1)),
            until=text(noon + timedelta(hours=1, minutes=37)),
        ),
        "workspace_id": one("workspace_id", v["workspace"]),
        "rule_id": one("rule_id", v["rule"]),
    }


WINDOWED = ("1 day", "7 days", "10:00", "last 24 h")


async def measure(path: Path, runs: int, only: str = "") -> dict[str, Any]:
    store = SqliteStore(path)
    await store.open()
    results: dict[str, Any] = {}
    try:
        for name, query in queries(pick(path)).items():
            if only not in name:
                continue
            q = dataclasses.replace(query, with_total=False)
            modes = ("after", "one reader", "before") if name.startswith(WINDOWED) else ("after", "before")
            took: dict[str, list[float]] = {m: [] for m in modes}
            answers: dict[str, Any] = {}
            for m in modes:
                with mode(m):
                    answers[m] = await store.facets(q, 10)  # warm
            for _ in range(runs):
                for m in modes:
                    with mode(m):
                        started = time.perf_counter()
                        answers[m] = await store.facets(q, 10)
                        took[m].append(round((time.perf_counter() - started) * 1000, 1))
            assert all(answer == answers["after"] for answer in answers.values()), name
            results[name] = {
                "matches": answers["after"].total,
                **{f"{m.replace(' ', '_')}_ms": round(statistics.median(took[m]), 1) for m in modes},
                "runs_ms": took,
            }
            medians = "  ".join(f"{m} {statistics.median(took[m]):7.1f}" for m in modes)
            print(f"{name:40} {medians} ms  ({answers['after'].total:,})", file=sys.stderr)
    finally:
        await store.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db", type=Path)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--only", default="", help="only the queries whose name holds this")
    args = parser.parse_args()
    load = round(os.getloadavg()[0], 1)
    rows = asyncio.run(measure(args.db, args.runs, args.only))
    report = {
        "command": " ".join(["python -m bench.facets_bench", f"bench/data/{args.db.name}", *sys.argv[2:]]),
        "load_average_1m_at_start": load,
        "load_average_1m_at_end": round(os.getloadavg()[0], 1),
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
