"""The real app, its sink a plain `sqlite3` writer: the most single posts can reach on the server's one core.

Like bench/null_sink_server.py, but this sink commits. Posts that arrive while a transaction runs are the
next transaction, as with the real writer, and each transaction is plain `executemany` into the app's own file
(every migration applied): the decision rows and one summary upsert per session, bench/ceiling.py's
statements. There is no planning, no duplicate check, no counts, no audit log and no quota. One core has to
carry what the app spends beside its store (the null-sink app) plus what plain `sqlite3` spends at the batch
size the posts give: no store can do better than this one. A benchmark tool only: `python -m
bench.plain_sink_server --port N` with the usual CAVRA_* settings.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aiohttp import web

from cavra_ingest.cli.serve import event_loop
from cavra_ingest.core.models import Accepted
from cavra_ingest.core.sink import SinkHealth, WriteItem, WriteResult, WriterStats
from cavra_ingest.http import logs, serving
from cavra_ingest.http.app import create_app
from cavra_ingest.http.keys import SINK_KEY
from cavra_ingest.settings import Settings
from cavra_ingest.store.sql import INSERT_DECISION, decision_row

from .ceiling import UPSERT_SUMMARY, summaries


class PlainSink:
    def __init__(self, path: Path) -> None:
        self.stats = WriterStats()
        self.pending: list[tuple[list[WriteItem], asyncio.Future[list[WriteResult]]]] = []
        self.wake = asyncio.Event()
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="plain-writer")
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "cache_size=-65536", "temp_store=MEMORY"):
            self.db.execute(f"PRAGMA {pragma}")

    def admit(self, records: int) -> None:
        pass

    async def commit(self, items: list[WriteItem]) -> list[WriteResult]:
        done: asyncio.Future[list[WriteResult]] = asyncio.get_running_loop().create_future()
        self.pending.append((items, done))
        self.wake.set()
        return await done

    def write(self, items: list[Accepted]) -> None:
        rows = [decision_row(item) for item in items]
        self.db.execute("BEGIN IMMEDIATE")
        self.db.executemany(INSERT_DECISION, rows)
        self.db.executemany(UPSERT_SUMMARY, summaries(rows))
        self.db.execute("COMMIT")

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.wake.wait()
            self.wake.clear()
            batch, self.pending = self.pending, []
            items = [item for part, _ in batch for item in part if isinstance(item, Accepted)]
            await loop.run_in_executor(self.thread, self.write, items)
            self.stats.transactions += 1
            self.stats.records += len(items)
            for part, done in batch:
                done.set_result([WriteResult("created", item.payload) for item in part])  # type: ignore[union-attr]

    def health(self) -> SinkHealth:
        return SinkHealth(False, sum(len(part) for part, _ in self.pending), 1, self.stats)


def plain_sink(path: Path):  # type: ignore[no-untyped-def]
    async def install(app: web.Application) -> AsyncIterator[None]:
        sink = PlainSink(path)
        task = asyncio.create_task(sink.run())
        app[SINK_KEY] = sink  # type: ignore[assignment]
        yield
        task.cancel()
        sink.db.close()

    return install


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8091)
    args = parser.parse_args()
    settings = Settings.from_env(port=args.port)
    logs.configure(settings.server.log_format, settings.server.log_level)
    app = create_app(settings)
    # After the runtime's (which opens and migrates the file), so it replaces the writer as the sink.
    if settings.store.activity_db is None:
        parser.error("set CAVRA_ACTIVITY_DB to the SQLite file to write")
    app.cleanup_ctx.append(plain_sink(Path(settings.store.activity_db)))
    serving.run(app, settings, event_loop(settings), access_log=None)


if __name__ == "__main__":
    main()
