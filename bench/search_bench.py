"""Search and histogram benchmark: write cost of the trigram index, index size, and read times at N rows.

Usage: python -m bench.search_bench --rows 1000000 [--db PATH] [--reuse] [--write-rows 100000]
Pre-loads N decisions with bench/preload.py (SQL-generated rows), runs the background indexer to the end
(timed), then times through the real app over HTTP (aiohttp test client): a selective `q` page, an
unselective one, a prefix filter, the histogram over all time, the default facets. The write cost compares
batches of 500 inserts with no search index, with the index filled by a trigger in the same transaction,
and with the background indexer's batches. Writes bench/results/search-<rows>.{json,md}. Not part of `test`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from bench.preload import preload
from cavra_ingest.http.app import create_app
from cavra_ingest.http.keys import RUNTIME_KEY
from cavra_ingest.settings import Settings
from cavra_ingest.store.migrate import apply_migrations
from cavra_ingest.store.sql import INSERT_DECISION, SQLITE_SEARCH_TEXT
from cavra_ingest.store.sqlite.writes import INDEX_SEARCH

RESULTS = Path(__file__).parent / "results"
TRIGGER = f"""CREATE TRIGGER search_now AFTER INSERT ON activity_decisions BEGIN
INSERT INTO activity_search (rowid, body) SELECT new.rowid, {
    SQLITE_SEARCH_TEXT.replace("target", "new.target")
    .replace("rule_id", "new.rule_id")
    .replace("payload", "new.payload")
}; END"""
# Times through the app: (label, path). The pre-loaded targets are `src/module_NNNN/handler.py` (i % 10000).
READS = [
    ("q selective (module_0042/, 1 in 10,000)", "/decisions?q=module_0042/"),
    ("q selective, without the total", "/decisions?q=module_0042/&count=false"),
    ("q phrase + filter", "/decisions?q=%22module_0042/handler%22&decision=block"),
    ("q unselective (handler, every row), no total", "/decisions?q=handler&count=false"),
    ("q unselective (handler, every row), with the total", "/decisions?q=handler"),
    ("prefix repository=acme/repo-1* (1 in 4)", "/decisions?repository=acme/repo-1*"),
    ("prefix repository=acme/repo-1*, no total", "/decisions?repository=acme/repo-1*&count=false"),
    ("histogram, all time, auto", "/decisions/histogram"),
    ("histogram, all time, decision=block", "/decisions/histogram?decision=block"),
    ("histogram, last day of data, 1h", "/decisions/histogram?interval=1h&since={last_day}"),
    ("histogram, q selective", "/decisions/histogram?q=module_0042/"),
    ("facets, no filter (the console's default view)", "/decisions/facets"),
    ("facets, last day of data", "/decisions/facets?since={last_day}"),
]


def rows_for(n: int, first: int) -> list[tuple[Any, ...]]:
    out = []
    for i in range(first, first + n):
        payload = json.dumps(
            {
                "decision_id": f"w-{i}",
                "reason": "write inside the working tree is allowed",
                "requested_operation": "edit file and run tests",
                "tool_name": "editor",
            }
        )
        out.append((f"w-{i}", f"s-{i % 500}", "agent-1", "ai", "acme/repo", "pack", "write_file",
                    f"src/module_{i % 10000:04d}/handler.py", f"runtime.fs.write.{i % 100:02d}", "allow", "low",
                    f"2026-01-01T00:00:{i % 60:02d}.{i:06d}+00:00"[:32], f"c-{i}", payload, None, None))  # fmt: skip
    return out


def write_cost(total: int, batch: int = 500) -> dict[str, float]:
    """Seconds per 1,000 rows inserted in batches, for each way of indexing."""
    runs: dict[str, list[float]] = {}
    # Interleaved rounds, median per figure: the machine is shared, one run of each says little.
    modes = ["none", "trigger", "background"]
    for round_ in range(3):
        # Each mode goes first once: the first file of a round measured slower whatever it held.
        order = modes[round_:] + modes[:round_]
        for key, value in write_round(total, batch, order).items():
            runs.setdefault(key, []).append(value)
    results = {key: statistics.median(values) for key, values in runs.items()}
    base = results["none_insert_s_per_1000"]
    results["trigger_cost_pct"] = (results["trigger_insert_s_per_1000"] / base - 1) * 100
    results["background_cost_pct"] = (
        (results["background_insert_s_per_1000"] + results["background_indexing_s_per_1000"]) / base - 1
    ) * 100
    return results


def write_round(total: int, batch: int, order: list[str]) -> dict[str, float]:
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in order:
            path = Path(tmp) / f"{mode}.db"
            apply_migrations(path)
            db = sqlite3.connect(path, isolation_level=None)
            db.execute("PRAGMA synchronous=FULL")
            if mode == "trigger":
                db.execute(TRIGGER)
            start = time.perf_counter()
            for first in range(0, total, batch):
                db.execute("BEGIN IMMEDIATE")
                db.executemany(INSERT_DECISION, rows_for(batch, first))
                db.execute("COMMIT")
            elapsed = time.perf_counter() - start
            if mode == "background":
                indexed = time.perf_counter()
                for upto in range(0, total, 20_000):
                    db.execute("BEGIN IMMEDIATE")
                    db.execute(INDEX_SEARCH, (upto, upto + 20_000))
                    db.execute("COMMIT")
                results["background_indexing_s_per_1000"] = (time.perf_counter() - indexed) / total * 1000
            results[f"{mode}_insert_s_per_1000"] = elapsed / total * 1000
            db.close()
    return results


async def postgres_write_cost(dsn: str, total: int, batch: int = 500) -> dict[str, float]:
    """Seconds per 1,000 rows inserted in batches into PostgreSQL: without search, with 012's queue trigger (the
    index filled later by the indexer, timed apart), and with the trigram index built in the same transaction."""
    import asyncpg

    from cavra_ingest.core.sqltext import numbered
    from cavra_ingest.store.postgres.store import INDEX_SEARCH as PG_INDEX_SEARCH
    from cavra_ingest.store.postgres.store import PostgresStore

    runs: dict[str, list[float]] = {}
    sql = numbered(INSERT_DECISION)
    for round_ in range(3):
        for mode in ("none", "queued", "in_transaction"):
            schema = f"search_bench_{mode}_{round_}"
            store = PostgresStore(dsn, schema=schema)
            await store.migrate()
            conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
            try:
                if mode != "queued":
                    await conn.execute("DROP TRIGGER activity_decisions_search_queue ON activity_decisions")
                if mode == "in_transaction":
                    await conn.execute(
                        "CREATE INDEX inline_search ON activity_decisions"
                        " USING gin (cavra_search_text(target, rule_id, payload) public.gin_trgm_ops)"
                    )
                start = time.perf_counter()
                for first in range(0, total, batch):
                    async with conn.transaction():
                        await conn.executemany(sql, rows_for(batch, first))
                runs.setdefault(mode, []).append((time.perf_counter() - start) / total * 1000)
                if mode == "queued":
                    start = time.perf_counter()
                    while await conn.fetchval("SELECT count(*) FROM activity_search_queue"):
                        await conn.execute(PG_INDEX_SEARCH, 20_000)
                    runs.setdefault("indexing", []).append((time.perf_counter() - start) / total * 1000)
                    size = await conn.fetchval("SELECT pg_total_relation_size('activity_search')")
                    runs.setdefault("search_table_bytes_per_row", []).append(size / total)
            finally:
                await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
                await conn.close()
    results = {f"{key}_s_per_1000" if "bytes" not in key else key: statistics.median(v) for key, v in runs.items()}
    base = results["none_s_per_1000"]
    results["queued_cost_pct"] = (results["queued_s_per_1000"] / base - 1) * 100
    results["in_transaction_cost_pct"] = (results["in_transaction_s_per_1000"] / base - 1) * 100
    return results


def sizes(path: Path) -> dict[str, int]:
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall()
    except sqlite3.OperationalError:
        return {}
    finally:
        db.close()
    found = dict(rows)
    search = sum(v for k, v in found.items() if k.startswith("activity_search"))
    return {"search_index_bytes": search, "database_bytes": sum(found.values())}


async def reads(path: Path, runs: int) -> tuple[float, list[dict[str, Any]]]:
    settings = Settings.of(activity_db=str(path), search_index_interval_s=3600)
    client = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    try:
        indexer = client.app[RUNTIME_KEY].indexer
        assert indexer is not None
        start = time.perf_counter()
        await indexer.catch_up()
        indexing = time.perf_counter() - start
        with sqlite3.connect(path) as db:
            last = db.execute("SELECT max(timestamp) FROM activity_decisions").fetchone()[0]
        last_day = last[:10] + "T00:00:00Z"
        found = []
        for label, url in READS:
            url = url.format(last_day=last_day)
            times = []
            for _ in range(runs):
                t = time.perf_counter()
                response = await client.get(url)
                body = await response.read()
                assert response.status == 200, body[:300]
                times.append((time.perf_counter() - t) * 1000)
            found.append({"query": label, "url": url, "median_ms": round(statistics.median(times), 1),
                          "max_ms": round(max(times), 1), "bytes": len(body)})  # fmt: skip
            print(f"  {label}: {found[-1]['median_ms']} ms", flush=True)
        return indexing, found
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--db", type=Path)
    parser.add_argument("--reuse", action="store_true")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--write-rows", type=int, default=100_000)
    parser.add_argument("--postgres", help="also measure PostgreSQL's write cost on this database URL, then stop")
    parser.add_argument("--writes-only", action="store_true", help="measure SQLite's write cost only")
    args = parser.parse_args()
    if args.writes_only:
        found = write_cost(args.write_rows)
        print(json.dumps(found, indent=1))
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "search-sqlite-writes.json").write_text(json.dumps(found, indent=1) + "\n")
        return
    if args.postgres:
        found = asyncio.run(postgres_write_cost(args.postgres, args.write_rows))
        print(json.dumps(found, indent=1))
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "search-postgres-writes.json").write_text(json.dumps(found, indent=1) + "\n")
        return
    path = args.db or Path(__file__).parent / "data" / f"search-{args.rows}.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not (args.reuse and path.exists()):
        path.unlink(missing_ok=True)
        start = time.perf_counter()
        preload(path, args.rows)
        print(f"preload: {time.perf_counter() - start:.0f}s", flush=True)
    writes: dict[str, float] = {}
    if args.write_rows:
        print("write cost...", flush=True)
        writes = write_cost(args.write_rows)
    print(json.dumps(writes, indent=1), flush=True)
    indexing, found = asyncio.run(reads(path, args.runs))
    report = {"rows": args.rows, "cpus": os.cpu_count(), "load": os.getloadavg(), "indexing_s": round(indexing, 1),
              **sizes(path), "writes": writes, "reads": found}  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"search-{args.rows}.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [f"# Search and histogram at {args.rows:,} rows", "",
             (f"Background indexing of the pre-loaded rows: {indexing:.0f} s; " if indexing >= 1 else "")
             + "trigram index "
             f"{report.get('search_index_bytes', 0) / 1e6:.0f} MB of {report.get('database_bytes', 0) / 1e6:.0f} MB.",
             "", "Write cost (batches of 500, synchronous=FULL, s per 1,000 rows): "
             + ", ".join(f"{k} {v:.3f}" for k, v in writes.items()), "",
             "| query | median ms | max ms |", "|---|---|---|"]  # fmt: skip
    lines += [f"| {r['query']} | {r['median_ms']} | {r['max_ms']} |" for r in found]
    (RESULTS / f"search-{args.rows}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
