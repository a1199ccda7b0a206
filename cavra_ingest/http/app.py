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
    COUNTS_HEALTH_KEY,
    DISK_KEY,
    HOSTS_KEY,
    METRICS_KEY,
    RUNTIME_KEY,
    SEARCH_HEALTH_KEY,
    SETTINGS_KEY,
    SINK_KEY,
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
    add_console_routes(app)
    if settings.server.cors_origins:
        cors.install(app, settings.server.cors_origins)
    return app
