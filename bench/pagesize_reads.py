"""Read latency of the same queries on two files that differ only in page size, interleaved in one run.

Also the cost the deferred counts fold puts on reads: the counts-served queries again after
`--waiting` decisions were inserted above the counts' watermark (as rows a batch leaves for the next fold).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from cavra_ingest.store.base import ListQuery
from cavra_ingest.store.sql import INSERT_DECISION
from cavra_ingest.store.sqlite.store import SqliteStore

from .rows import row


def queries(newest: str) -> dict[str, tuple[str, ListQuery]]:
    """name -> (kind, query): the listings and facets the read targets name."""
    day_start = newest[:10] + "T00:00:00.000000+00:00"
    q = ListQuery
    page = {"with_total": False}
    return {
        "page: unfiltered": ("page", q(**page)),
        "page: one agent + block": ("page", q(equals=(("agent_id", ("agent-007",)), ("decision", ("block",))), **page)),
        "page: session timeline (500)": (
            "page",
            q(equals=(("session_id", ("sess-00007",)),), limit=500, oldest_first=True, **page),
        ),
        "page 2000 by offset: block|require_approval": (
            "page",
            q(equals=(("decision", ("block", "require_approval")),), offset=1999 * 50, **page),
        ),
        "total: policy pack (counts)": ("page", q(equals=(("policy_pack", ("cavra-ai-agent-baseline",)),))),
        "facets: all time (counts)": ("facets", q()),
        "facets: decision=block (counts)": ("facets", q(equals=(("decision", ("block",)),))),
        "facets: one agent": ("facets", q(equals=(("agent_id", ("agent-007",)),))),
        "facets: newest day, unaligned": ("facets", q(since=day_start[:11] + "06:30:00.000000+00:00")),
    }


async def timed(fn: Callable[[], Awaitable[Any]], runs: int) -> list[float]:
    await fn()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        await fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return samples


async def compare(paths: list[Path], runs: int, rounds: int, waiting: int = 0) -> dict[str, dict[str, float]]:
    stores = [SqliteStore(path, cache_mb=None) for path in paths]
    for store in stores:
        await store.open()
        if waiting:
            # After open, which would fold them in.
            insert_waiting(store.path, waiting)
    with sqlite3.connect(paths[0]) as db:
        newest = db.execute("SELECT max(timestamp) FROM activity_decisions").fetchone()[0]
    found: dict[str, dict[str, list[float]]] = {}
    try:
        for _ in range(rounds):
            for path, store in zip(paths, stores, strict=True):
                for name, (kind, query) in queries(newest).items():
                    if kind == "page":
                        fn = lambda q=query, s=store: s.list_decisions(q)  # noqa: E731
                    else:
                        fn = lambda q=query, s=store: s.facets(q, 10)  # noqa: E731
                    found.setdefault(name, {}).setdefault(path.name, []).extend(await timed(fn, runs))
                ids = [
                    r[0]
                    for r in sqlite3.connect(path).execute(
                        "SELECT decision_id FROM activity_decisions WHERE rowid % 997 = 0 LIMIT 200"
                    )
                ]
                samples = []
                for did in ids:
                    t0 = time.perf_counter()
                    await store.get_decision(did)
                    samples.append((time.perf_counter() - t0) * 1000)
                found.setdefault("one decision by id", {}).setdefault(path.name, []).extend(samples)
    finally:
        for store in stores:
            await store.close()
    return {name: {file: round(statistics.median(s), 2) for file, s in per.items()} for name, per in found.items()}


def insert_waiting(path: Path, n: int) -> None:
    """Insert n decisions as another program would: above the counts' watermark, not folded."""
    rng = random.Random(5)
    with sqlite3.connect(path) as db:
        db.executemany(INSERT_DECISION, [row(rng, 5000, 300) for _ in range(n)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("files", type=Path, nargs="+")
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--waiting", type=int, default=0, help="then insert this many unfolded rows and measure again")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(compare(args.files, args.runs, args.rounds)), indent=1))
    if args.waiting:
        print(f"with {args.waiting} decisions waiting for the counts fold:")
        print(json.dumps(asyncio.run(compare(args.files, args.runs, args.rounds, args.waiting)), indent=1))


if __name__ == "__main__":
    main()
