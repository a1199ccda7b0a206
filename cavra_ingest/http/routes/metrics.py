"""`GET /metrics`: this app's metrics in the Prometheus text format, for an unbound token."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cavra_ingest.core.errors import ApiError
from cavra_ingest.http.auth import PRINCIPAL
from cavra_ingest.http.keys import METRICS_KEY


async def metrics_view(request: web.Request) -> web.Response:
    """Serve this app's metrics in the Prometheus text format."""
    principal = request.get(PRINCIPAL)
    if principal is not None and principal.tenant_id is not None:
        # The counts span every tenant (and name them): only an unbound token may read them.
        raise ApiError(403, "metrics cover every tenant; use a token not bound to a tenant")
    body = generate_latest(request.app[METRICS_KEY].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
