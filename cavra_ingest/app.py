"""The application factory: it only wires settings, store, writer and routes."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from workers.writer import BatchWriter

from . import export, facets, ingest, openapi, reads
from .console import add_console_routes
from .errors import json_errors
from .keys import SETTINGS_KEY, STORE_KEY, WRITER_KEY
from .settings import Settings
from .store import make_store


async def store_context(app: web.Application) -> AsyncIterator[None]:
    """Open (and migrate) the store first; close it last."""
    store = make_store(app[SETTINGS_KEY])
    await store.open()
    app[STORE_KEY] = store
    yield
    await store.close()


async def writer_context(app: web.Application) -> AsyncIterator[None]:
    """Start the batch writer; on the way out, drain it before the store closes."""
    settings = app[SETTINGS_KEY]
    writer = BatchWriter(
        app[STORE_KEY],
        batch_max_records=settings.batch_max_records,
        batch_max_wait_ms=settings.batch_max_wait_ms,
        queue_max_records=settings.queue_max_records,
        drain_deadline_s=settings.drain_deadline_s,
    )
    writer.start()
    app[WRITER_KEY] = writer
    yield
    await writer.stop()


async def refuse_new_writes(app: web.Application) -> None:
    # Runs before in-flight handlers are awaited: new writes get 503, queued ones commit until the drain
    # deadline, and what misses it gets a 503 in time for its handler to answer before aiohttp gives up.
    app[WRITER_KEY].begin_stop()


def create_app(settings: Settings | None = None) -> web.Application:
    """Build the app for the given settings (from the environment by default)."""
    settings = settings or Settings.from_env()
    app = web.Application(middlewares=[json_errors], client_max_size=settings.max_body_bytes)
    app[SETTINGS_KEY] = settings
    app.cleanup_ctx.extend([store_context, writer_context])
    app.on_shutdown.append(refuse_new_writes)
    app.router.add_post("/decisions", ingest.post_decisions)
    app.router.add_get("/decisions", reads.list_decisions)
    # Fixed paths before `/decisions/{decision_id}`, which would otherwise capture `facets`.
    app.router.add_get("/decisions/facets", facets.decision_facets)
    app.router.add_get("/decisions.ndjson", export.decisions_ndjson)
    app.router.add_get("/decisions.csv", export.decisions_csv)
    app.router.add_get("/decisions/{decision_id}", reads.get_decision)
    app.router.add_post("/sessions", ingest.post_sessions)
    app.router.add_get("/sessions", reads.list_sessions)
    app.router.add_get("/sessions/{session_id}", reads.get_session)
    app.router.add_get("/sessions/{session_id}/decisions", reads.session_timeline)
    app.router.add_get("/healthz", reads.healthz)
    app.router.add_get("/console/config", reads.console_config)
    app.router.add_get("/openapi.json", openapi.spec)
    app.router.add_get("/docs", openapi.docs)
    add_console_routes(app)
    return app
