"""Time the all-time day histogram on a pre-loaded file: the scan path against the counts path (store method)."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from cavra_ingest.http.app import create_app
from cavra_ingest.settings import Settings
from cavra_ingest.store import dimensions
from cavra_ingest.store.base import ListQuery
from cavra_ingest.store.sqlite import countplan
from cavra_ingest.store.sqlite.store import SqliteStore

QUERIES = {
    "all time": ListQuery(),
    "all time, decision=block": ListQuery(equals=(("decision", ("block",)),)),
}


async def timed(store: SqliteStore, query: ListQuery, runs: int) -> tuple[float, int]:
    took = []
    for _ in range(runs):
        started = time.perf_counter()
        rows = await store.histogram(query, dimensions.DAY)
        took.append((time.perf_counter() - started) * 1000)
    return statistics.median(took), sum(n for _, _, n in rows)


URLS = ("interval=1d", "interval=1d&decision=block", "interval=auto", "interval=auto&decision=block")


async def over_http(path: Path, runs: int) -> None:
    """Time whole requests through the real app, with and without the counts paths."""
    client = TestClient(TestServer(create_app(Settings.of(activity_db=str(path), search_index_interval_s=3600))))
    await client.start_server()
    try:
        for url in URLS:
            figures = []
            for scanned in (True, False):
                servable = countplan.servable
                if scanned:
                    countplan.servable = lambda *args, **kwargs: None  # type: ignore[assignment]
                try:
                    took = []
                    for _ in range(runs):
                        started = time.perf_counter()
                        response = await client.get(f"/decisions/histogram?{url}")
                        reply = await response.json()
                        took.append((time.perf_counter() - started) * 1000)
                finally:
                    countplan.servable = servable
                figures.append(f"{statistics.median(took):.1f} ms")
            print(f"GET /decisions/histogram?{url} ({reply['interval']}): before {figures[0]}, after {figures[1]}")
    finally:
        await client.close()


async def main(path: Path, runs: int) -> None:
    await over_http(path, runs)
    store = SqliteStore(path)
    await store.open()
    try:
        for name, query in QUERIES.items():
            bounds_start = time.perf_counter()
            await store.time_bounds(query)
            bounds_ms = (time.perf_counter() - bounds_start) * 1000
            fast, total = await timed(store, query, runs)
            servable = countplan.servable
            countplan.servable = lambda *args, **kwargs: None  # type: ignore[assignment]
            try:
                slow, scanned = await timed(store, query, runs)
            finally:
                countplan.servable = servable
            assert total == scanned, (total, scanned)
            print(f"{name}: scan {slow:.1f} ms, counts {fast:.1f} ms, time_bounds {bounds_ms:.1f} ms ({total:,} rows)")
    finally:
        await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("db", type=Path)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.db, args.runs))
