"""`/sinks`: streaming destinations (docs/streaming.md). Admin scope; a tenant's admin sees only its own."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from cavra_ingest.core.errors import ApiError
from cavra_ingest.core.models import now_text
from cavra_ingest.core.sinks import (
    SinkDef,
    SinkError,
    SinkStatus,
    check_events,
    check_filter_streams,
    check_kind,
    check_name,
    check_secret,
    check_state,
    check_target,
    missing_package,
)
from cavra_ingest.http.auth import principal_of
from cavra_ingest.http.keys import DELIVERY_KEY, SETTINGS_KEY, SINK_TABLES_KEY
from cavra_ingest.http.middleware import json_reply
from cavra_ingest.http.routes.reads import integer
from cavra_ingest.http.sinkfilter import checked_query
from cavra_ingest.runtime import replay_dead_letters
from cavra_ingest.store.sinks import SinkTables

CREATE_FIELDS = frozenset({"name", "kind", "target", "filter", "secret", "start", "tenant_id", "state", "events"})
PATCH_FIELDS = frozenset({"filter", "state", "events"})
MAX_BODY = 16_384


def tables(request: web.Request) -> SinkTables:
    if SINK_TABLES_KEY not in request.app:
        raise ApiError(404, "sinks need a SQL store (SQLite or PostgreSQL); the JSON store has none")
    return request.app[SINK_TABLES_KEY]


async def body_of(request: web.Request, allowed: frozenset[str]) -> dict[str, Any]:
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise ApiError(413, "a sink definition is at most 16 KiB")
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise ApiError(400, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body is a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ApiError(400, f"unknown field {unknown[0]!r}", field=unknown[0])
    return body


def refused(exc: SinkError) -> ApiError:
    return ApiError(400, str(exc), field=exc.field)


async def visible_sink(request: web.Request) -> SinkDef:
    """The named sink, if the caller may manage it; another tenant's is "not found"."""
    name = request.match_info["name"]
    sink = await tables(request).get(name) if "\x00" not in name else None
    tenant = principal_of(request).tenant_id
    if sink is None or (tenant is not None and sink.tenant_id != tenant):
        raise ApiError(404, "sink not found")
    return sink


async def check_filter(request: web.Request, text: object, tenant_id: str | None) -> str:
    if not isinstance(text, str) or len(text) > 4096:
        raise ApiError(400, "filter is a GET /decisions query string", field="filter")
    text = text.lstrip("?")
    try:
        await checked_query(request.app, text, tenant_id)
    except ApiError as exc:
        # The same refusal GET /decisions gives, said of the filter.
        raise ApiError(400 if exc.status != 403 else 403, f"filter: {exc.detail}", field="filter") from None
    return text


async def status_of(store: SinkTables, sink: SinkDef) -> SinkStatus:
    cursor = await store.cursor(sink.name)
    access = await store.access_cursor(sink.name)
    access_delivered = access_lag = 0
    if access is not None:
        access_delivered = access[1]
        access_lag = await store.access_lag(access[0], sink.tenant_id) if "access" in sink.events else 0
    delivered = failed = lag = 0
    lag_s, error, success = 0.0, None, None
    if cursor is not None:
        import time

        position, delivered, failed, error, success, caught_up = cursor
        lag = await store.lag(position)
        lag_s = round(time.time() - caught_up, 3) if lag and caught_up else 0.0
    return SinkStatus(
        sink.name, sink.kind, sink.target, sink.filter, sink.state, sink.tenant_id, sink.created_at,
        delivered, failed, await store.dead_count(sink.name), lag, lag_s, error, success, sink.events,
        access_delivered, access_lag,
    )  # fmt: skip


def poke(request: web.Request) -> None:
    if DELIVERY_KEY in request.app:
        request.app[DELIVERY_KEY].poke()


async def create_sink(request: web.Request) -> web.Response:
    store = tables(request)
    body = await body_of(request, CREATE_FIELDS)
    bound = principal_of(request).tenant_id
    tenant = body.get("tenant_id", bound)
    if bound is not None and tenant != bound:
        raise ApiError(403, f"this token may only manage sinks of tenant {bound!r}", field="tenant_id")
    if tenant is not None and (not isinstance(tenant, str) or not tenant):
        raise ApiError(400, "tenant_id is a non-empty string", field="tenant_id")
    start = body.get("start", "beginning")
    if start not in ("beginning", "now"):
        raise ApiError(400, "start is `beginning` (the whole log, the default) or `now`", field="start")
    try:
        name = check_name(body.get("name"))
        kind = check_kind(body.get("kind"))
        target = check_target(kind, body.get("target"))
        state = check_state(body.get("state", "active"))
        secret = check_secret(kind, body.get("secret"))
        events = check_events(body.get("events", ["decisions"]))
        check_filter_streams(str(body.get("filter") or ""), events)
    except SinkError as exc:
        raise refused(exc) from None
    missing = missing_package(kind)
    if missing is not None:
        raise ApiError(400, f"a {kind} sink needs the {missing!r} package: pip install 'cavra-ingest[streaming]'",
                       field="kind")  # fmt: skip
    text = await check_filter(request, body.get("filter", ""), tenant)
    sink = SinkDef(name, kind, target, now_text(), text, state, tenant, secret is not None, events)
    position = await store.end() if start == "now" else (0, 0)
    access_position = await store.access_end() if start == "now" else (0, 0)
    if not await store.create(sink, secret, position, access_position):
        raise ApiError(409, f"a sink named {name!r} exists", field="name")
    poke(request)
    reply: dict[str, Any] = msgspec.to_builtins(await status_of(store, sink))
    if secret is not None and not body.get("secret"):
        # Made here: shown this once, never again.
        reply["secret"] = secret
    return json_reply(msgspec.json.encode(reply), 201)


async def list_sinks(request: web.Request) -> web.Response:
    store = tables(request)
    tenant = principal_of(request).tenant_id
    sinks = [s for s in await store.all() if tenant is None or s.tenant_id == tenant]
    return json_reply({"items": [await status_of(store, sink) for sink in sinks]})


async def get_sink(request: web.Request) -> web.Response:
    return json_reply(await status_of(tables(request), await visible_sink(request)))


async def patch_sink(request: web.Request) -> web.Response:
    store = tables(request)
    sink = await visible_sink(request)
    body = await body_of(request, PATCH_FIELDS)
    try:
        state = check_state(body.get("state", sink.state))
        events = check_events(body["events"]) if "events" in body else sink.events
        check_filter_streams(str(body.get("filter", sink.filter) or ""), events)
    except SinkError as exc:
        raise refused(exc) from None
    text = await check_filter(request, body["filter"], sink.tenant_id) if "filter" in body else sink.filter
    await store.update(sink.name, text, state, events)
    poke(request)
    changed = msgspec.structs.replace(sink, filter=text, state=state, events=events)
    return json_reply(await status_of(store, changed))


async def delete_sink(request: web.Request) -> web.Response:
    sink = await visible_sink(request)
    await tables(request).remove(sink.name)
    poke(request)
    return web.Response(status=204)


async def dead_letters(request: web.Request) -> web.Response:
    sink = await visible_sink(request)
    after = max(integer(request.query, "after", 0), 0)
    limit = min(max(integer(request.query, "limit", 100), 1), 500)
    items = await tables(request).dead(sink.name, after, limit)
    next_after = items[-1].id if len(items) == limit else None
    return json_reply({"items": items, "next_after": next_after})


async def replay_dead(request: web.Request) -> web.Response:
    sink = await visible_sink(request)
    delivered, left = await replay_dead_letters(tables(request), sink, request.app[SETTINGS_KEY].sinks)
    return json_reply({"replayed": delivered, "dead_letters": left})


def add_sink_routes(app: web.Application) -> None:
    app.router.add_post("/sinks", create_sink)
    app.router.add_get("/sinks", list_sinks)
    app.router.add_get("/sinks/{name}", get_sink)
    app.router.add_patch("/sinks/{name}", patch_sink)
    app.router.add_delete("/sinks/{name}", delete_sink)
    app.router.add_get("/sinks/{name}/dead", dead_letters)
    app.router.add_post("/sinks/{name}/replay", replay_dead)
