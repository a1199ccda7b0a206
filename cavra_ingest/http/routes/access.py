"""GET /access-events: sign-ins, sign-outs, refusals, session expiries, newest first; admins only.

A tenant-bound admin sees its tenant's events; an unbound admin sees all. The store (migration 022) is opened
here for every SQL store, whether or not a provider is configured, so the history stays readable.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec
from aiohttp import web

from cavra_ingest.core.errors import ApiError
from cavra_ingest.http.auth import principal_of
from cavra_ingest.http.keys import ACCESS_KEY, SETTINGS_KEY
from cavra_ingest.store.signin import signin_store

MAX_LIMIT = 1000


def _int(request: web.Request, name: str, default: int | None, low: int, high: int) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer", parameter=name) from None
    if not low <= value <= high:
        raise ApiError(400, f"{name} must be between {low} and {high}", parameter=name)
    return value


async def access_events(request: web.Request) -> web.Response:
    principal = principal_of(request)
    store = request.app.get(ACCESS_KEY)
    limit = _int(request, "limit", 100, 1, MAX_LIMIT)
    before = _int(request, "before", None, 1, 2**62)
    events = [] if store is None else await store.events(principal.tenant_id, before, limit or 100)
    body: dict[str, object] = {"items": [msgspec.to_builtins(event) for event in events]}
    if events and len(events) == limit:
        body["next_before"] = events[-1].id
    return web.json_response(body)


async def access_context(app: web.Application) -> AsyncIterator[None]:
    store = signin_store(app[SETTINGS_KEY])
    if store is not None:
        await store.open()
        app[ACCESS_KEY] = store
    try:
        yield
    finally:
        if store is not None:
            await store.close()
