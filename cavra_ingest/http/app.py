"""The application factory: it only wires settings, the runtime (store and writer) and routes."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from cavra_ingest.console import add_console_routes
from cavra_ingest.http import auth, cors, logs, openapi
from cavra_ingest.http.guards import BodyBudget, DiskFloor, allowed_hosts, host_set, security_headers
from cavra_ingest.http.keys import (
    AUDIT_KEY,
    BUDGET_KEY,
    CHILD_KEY,
    COUNTS_HEALTH_KEY,
    DELIVERY_KEY,
    DISK_KEY,
    HOSTS_KEY,
    METRICS_KEY,
    RUNTIME_KEY,
    SEARCH_HEALTH_KEY,
    SETTINGS_KEY,
    SINK_KEY,
    SINK_TABLES_KEY,
    STORE_KEY,
)
from cavra_ingest.http.metrics import Metrics
from cavra_ingest.http.middleware import json_errors
from cavra_ingest.http.routes import (
    access,
    evidence,
    exports,
    facets,
    histogram,
    ingest,
    probes,
    proofs,
    reads,
    rejections,
    session_exports,
    whoami,
)
from cavra_ingest.http.routes.metrics import metrics_view
from cavra_ingest.http.routes.sinks import add_sink_routes
from cavra_ingest.runtime import running
from cavra_ingest.settings import Settings


async def runtime_context(app: web.Application) -> AsyncIterator[None]:
    """Open the store and start the writer; on the way out the writer drains before the store closes."""
    async with running(app[SETTINGS_KEY]) as runtime:
        app[RUNTIME_KEY] = runtime
        app[STORE_KEY] = runtime.store
        app[SINK_KEY] = runtime.broker or runtime.writer
        runtime.writer.observers.append(app[METRICS_KEY].observe_batch)
        if runtime.audit is not None:
            app[AUDIT_KEY] = runtime.audit
        if runtime.indexer is not None:
            app[SEARCH_HEALTH_KEY] = runtime.indexer.health
        if runtime.folder is not None:
            app[COUNTS_HEALTH_KEY] = runtime.folder.health
        yield


async def sinks_context(app: web.Application) -> AsyncIterator[None]:
    """Open the sinks' tables and start the delivery (inline, or a child process this app watches); on the
    way out every task is cancelled and awaited, and the child stopped, within a bound: none outlives the app."""
    settings = app[SETTINGS_KEY]
    if settings.store.kind not in ("sqlite", "postgres"):
        yield
        return
    from cavra_ingest.http.sinkfilter import compiler
    from cavra_ingest.http.sinkmetrics import SinkCollector
    from cavra_ingest.runtime import sink_child, sink_delivery
    from cavra_ingest.store.sinks import SinkTables
    from cavra_ingest.store.sqlite.store import SqliteStore

    store = app[STORE_KEY]
    mode = settings.sinks.sink_delivery
    # Inline on SQLite, the small writes go through the writer's connection (its page cache stays warm).
    writer = store.write_statements if isinstance(store, SqliteStore) and mode == "inline" else None
    tables = SinkTables(settings, writer)
    await tables.open()
    app[SINK_TABLES_KEY] = tables
    child = None
    if mode == "process":
        # Started once a sink is active: an app with none runs no extra process.
        child = sink_child(settings)
        app[CHILD_KEY] = child
    # `process`: this app only watches (for /metrics and /healthz); the child delivers.
    on_active = child.start if child is not None else None
    delivery = sink_delivery(tables, settings.sinks, compiler(app), deliver=mode == "inline", on_active=on_active)
    app[DELIVERY_KEY] = delivery
    collector = SinkCollector(delivery)
    app[METRICS_KEY].registry.register(collector)
    delivery.start()
    try:
        yield
    finally:
        if child is not None:
            await child.stop()
        await delivery.stop()
        app[METRICS_KEY].registry.unregister(collector)
        await tables.close()


async def refuse_new_writes(app: web.Application) -> None:
    # Runs before in-flight handlers are awaited: new writes get 503, queued ones commit until the drain
    # deadline, and what misses it gets a 503 in time for its handler to answer before aiohttp gives up.
    app[RUNTIME_KEY].writer.begin_stop()
    broker = app[RUNTIME_KEY].broker
    if broker is not None:
        broker.begin_stop()


def create_app(settings: Settings | None = None) -> web.Application:
    """Build the app for the given settings (from the environment by default)."""
    settings = settings or Settings.from_env()
    app = web.Application(
        # Host check before auth: a request for another host is refused before its token is looked at.
        middlewares=[logs.observe, json_errors, allowed_hosts, auth.require_token],
        client_max_size=settings.limits.max_body_bytes,
    )
    app[SETTINGS_KEY] = settings
    app[METRICS_KEY] = Metrics.create(app)
    app[HOSTS_KEY] = host_set(settings)
    app[BUDGET_KEY] = BodyBudget(settings.limits.max_inflight_body_bytes)
    app[DISK_KEY] = DiskFloor(settings)
    app.on_response_prepare.append(security_headers)
    # Before the runtime, so its closing line comes after the writer drained and the store closed.
    app.cleanup_ctx.append(logs.lifecycle)
    app.cleanup_ctx.append(runtime_context)
    app.cleanup_ctx.append(sinks_context)
    app.cleanup_ctx.append(auth.guard_context)
    app.cleanup_ctx.append(access.access_context)
    app.router.add_get("/access-events", access.access_events)
    if settings.oidc.oidc_issuer:
        from cavra_ingest.http import signin

        signin.add_routes(app)
    app.on_shutdown.append(logs.shutting_down)
    app.on_shutdown.append(refuse_new_writes)
    app.router.add_post("/decisions", ingest.post_decisions)
    app.router.add_get("/decisions", reads.list_decisions)
    # Fixed paths before `/decisions/{decision_id}`, which would otherwise capture `facets`.
    app.router.add_get("/decisions/facets", facets.decision_facets)
    app.router.add_get("/decisions/histogram", histogram.decision_histogram)
    app.router.add_get("/decisions.ndjson", exports.decisions_ndjson)
    app.router.add_get("/decisions.csv", exports.decisions_csv)
    app.router.add_get("/decisions/{decision_id}", reads.get_decision)
    app.router.add_post("/sessions", ingest.post_sessions)
    app.router.add_get("/sessions", reads.list_sessions)
    app.router.add_get("/sessions.ndjson", session_exports.sessions_ndjson)
    app.router.add_get("/sessions.csv", session_exports.sessions_csv)
    app.router.add_get("/sessions/{session_id}", reads.get_session)
    app.router.add_get("/sessions/{session_id}/decisions", reads.session_timeline)
    app.router.add_get("/healthz", reads.healthz)
    app.router.add_get("/readyz", probes.readyz)
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/console/config", reads.console_config)
    app.router.add_get("/openapi.json", openapi.spec)
    app.router.add_get("/docs", openapi.docs)
    app.router.add_get("/auth/whoami", whoami.whoami)
    app.router.add_get("/decisions/{decision_id}/proof", proofs.decision_proof)
    app.router.add_get("/log/checkpoint", proofs.checkpoint)
    app.router.add_get("/log/public-key", proofs.public_key)
    app.router.add_get("/log/consistency", proofs.consistency)
    app.router.add_get("/sessions/{session_id}/evidence", evidence.session_evidence)
    app.router.add_get("/ingest/rejections", rejections.list_rejections)
    add_sink_routes(app)
    add_console_routes(app)
    if settings.server.cors_origins:
        cors.install(app, settings.server.cors_origins)
    return app
