"""`GET /ingest/rejections`: records a JetStream worker refused after their 202 (docs/scale-out.md)."""

from __future__ import annotations

from aiohttp import web

from cavra_ingest.core.errors import ApiError
from cavra_ingest.http.auth import principal_of
from cavra_ingest.http.keys import SETTINGS_KEY, STORE_KEY
from cavra_ingest.http.middleware import json_reply
from cavra_ingest.http.replies import RejectionPage
from cavra_ingest.http.routes.proofs import only
from cavra_ingest.http.routes.reads import integer
from cavra_ingest.store.base import KeepsRejections

MAX_REJECTIONS = 500


async def list_rejections(request: web.Request) -> web.Response:
    """List refused records, oldest first; a tenant-bound token sees its own tenant's only."""
    only(request.query, "decision_id", "session_id", "after", "limit")
    limit = integer(request.query, "limit", 100)
    after = integer(request.query, "after", 0)
    if not 1 <= limit <= MAX_REJECTIONS:
        raise ApiError(400, f"limit must be 1..{MAX_REJECTIONS}", parameter="limit")
    tenant = principal_of(request).tenant_id
    store = request.app[STORE_KEY]
    if not isinstance(store, KeepsRejections) or not request.app[SETTINGS_KEY].broker.broker_url:
        # The embedded mode keeps none: every refusal is in the POST /decisions reply itself.
        return json_reply(RejectionPage([], None))
    rows = await store.rejections(
        request.query.get("decision_id") or None, request.query.get("session_id") or None, tenant, after, limit
    )
    return json_reply(RejectionPage([rejection for _, rejection in rows], rows[-1][0] if rows else None))
