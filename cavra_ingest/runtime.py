"""The store and the batch writer as one async context: the app, a worker process and tests all use it.

The wiring: the one module of the package that imports workers.

Imports: core, settings, auditlog, store, broker, workers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cavra_ingest.auditlog.log import AuditLog, audit_log
from cavra_ingest.broker.jetstream import BrokerSink
from cavra_ingest.core.sinks import SinkDef
from cavra_ingest.settings import Settings, SinkSettings
from cavra_ingest.store import Store, make_store
from cavra_ingest.store.base import FoldsCounts, IndexesSearch
from workers.indexer import CountsFolder, Follower, SearchIndexer
from workers.writer import BatchWriter

if TYPE_CHECKING:
    from cavra_ingest.store.sinks import SinkTables
    from workers.childproc import Child
    from workers.delivery import Delivery


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    store: Store
    writer: BatchWriter
    # None on the JSON store or with CAVRA_AUDIT_LOG=0.
    audit: AuditLog | None = None
    # The background search indexer (SQLite's FTS5 table, PostgreSQL's pg_trgm table), unless search_index is off.
    indexer: SearchIndexer | None = None
    # The background folder of the decision counts' backlog (SQLite).
    folder: CountsFolder | None = None
    # JetStream mode (CAVRA_BROKER_URL): decisions are published, not written; None in the embedded mode.
    broker: BrokerSink | None = None


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Runtime]:
    """Open (and migrate) the store, start the writer; on the way out drain the writer, then close the store."""
    store = make_store(settings)
    await store.open()
    try:
        writer = BatchWriter(store, settings.writer)
        writer.start()
        followers: list[Follower] = []
        folder = None
        if isinstance(store, FoldsCounts):
            folder = CountsFolder(
                store.fold_counts,
                batch_rows=settings.store.counts_fold_rows,
                interval_s=settings.store.counts_fold_interval_s,
            )
            followers.append(folder)
        indexer = None
        if settings.store.search_index and isinstance(store, IndexesSearch):
            indexer = SearchIndexer(
                store.index_search,
                batch_rows=settings.store.search_index_batch_rows,
                interval_s=settings.store.search_index_interval_s,
            )
            followers.append(indexer)
        for follower in followers:
            follower.start()
        try:
            async with audit_log(settings, store) as audit, broker_sink(settings, writer) as broker:
                yield Runtime(settings, store, writer, audit=audit, indexer=indexer, folder=folder, broker=broker)
        finally:
            for follower in followers:
                await follower.stop()
            await writer.stop()
    finally:
        await store.close()


@asynccontextmanager
async def broker_sink(settings: Settings, writer: BatchWriter) -> AsyncIterator[BrokerSink | None]:
    """Connect to JetStream when CAVRA_BROKER_URL is set; on the way out, finish the publishes in flight."""
    if not settings.broker.broker_url:
        yield None
        return
    from cavra_ingest.broker.jetstream import connect

    sink = BrokerSink(await connect(settings), settings, writer)
    try:
        yield sink
    finally:
        await sink.close(settings.writer.drain_deadline_s)


# The sinks' workers are built here, so that only the wiring imports `workers` (the HTTP layer asks for them).
def sink_delivery(
    tables: SinkTables, settings: SinkSettings, compile_filter: Any, *, deliver: bool, on_active: Any
) -> Delivery:
    """The delivery of every sink: it delivers (`deliver`) or only watches a child process that does."""
    from workers.delivery import Delivery

    return Delivery(tables, settings, compile_filter, deliver=deliver, on_active=on_active)


def sink_child(settings: Settings) -> Child:
    """The child process that delivers when `CAVRA_SINK_DELIVERY=process`."""
    from workers.childproc import Child

    return Child(settings)


async def replay_dead_letters(tables: SinkTables, sink: SinkDef, settings: SinkSettings) -> tuple[int, int]:
    """Send a sink's dead letters once more; return (delivered, still dead)."""
    from workers.delivery import replay

    return await replay(tables, sink, settings)
