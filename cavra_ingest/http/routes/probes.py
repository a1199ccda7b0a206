"""Readiness (`GET /readyz`): serve traffic only with the store open and migrated, answering, and not draining.

`/healthz` stays liveness: it says the process is up, whatever the store is doing.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from cavra_ingest.http.keys import SINK_KEY, STORE_KEY
from cavra_ingest.http.middleware import json_reply
from cavra_ingest.http.replies import Readiness

# A store that cannot answer one indexed lookup within this is not ready, whatever the reason.
PROBE_TIMEOUT_S = 2.0
PROBE_SESSION_ID = "cavra-readyz-probe"


async def readyz(request: web.Request) -> web.Response:
    """Answer 200 when the store is open (so migrated: opening applies migrations) and answering, else 503."""
    app = request.app
    if STORE_KEY not in app or SINK_KEY not in app:
        return not_ready("unknown", "store is not open yet")
    store = app[STORE_KEY]
    if app[SINK_KEY].health().closing:
        return not_ready(store.kind, "draining: the server is shutting down")
    if getattr(app[SINK_KEY], "connected", True) is False:
        # JetStream mode: a replica that cannot publish takes no writes; the load balancer routes around it.
        return not_ready(store.kind, "the JetStream log is unreachable")
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            await store.get_session(PROBE_SESSION_ID)
    except TimeoutError:
        return not_ready(store.kind, f"store did not answer within {PROBE_TIMEOUT_S:g}s")
    except Exception as exc:  # any failure of the store means "not ready", never a 500
        return not_ready(store.kind, f"store is not answering: {type(exc).__name__}")
    return json_reply(Readiness(ready=True, store=store.kind))


def not_ready(store: str, reason: str) -> web.Response:
    return json_reply(Readiness(ready=False, store=store, reason=reason), 503, {"Retry-After": "1"})
