"""Write routes: `POST /decisions` (object, array or NDJSON) and `POST /sessions`."""

from __future__ import annotations

import asyncio

from aiohttp import web

from cavra_ingest.core.errors import ApiError
from cavra_ingest.core.models import Accepted
from cavra_ingest.core.sink import WriteItem, WriteResult
from cavra_ingest.core.validate import TimeWindow, check_decisions, check_session
from cavra_ingest.http.auth import charge, principal_of, stamp, stamp_session
from cavra_ingest.http.guards import Reservation as BodyReservation
from cavra_ingest.http.keys import BUDGET_KEY, DISK_KEY, METRICS_KEY, QUOTAS_KEY, SETTINGS_KEY, SINK_KEY
from cavra_ingest.http.middleware import json_reply
from cavra_ingest.http.quota import COUNTED, Reservation
from cavra_ingest.http.replies import batch_reply, decision_reply

JSON_TYPES = frozenset({"application/json"})
NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl"})


async def read_body(request: web.Request, *, allow_ndjson: bool) -> bytes:
    """Check the content type, then read the body within the size and time limits."""
    settings = request.app[SETTINGS_KEY]
    allowed = JSON_TYPES | NDJSON_TYPES if allow_ndjson else JSON_TYPES
    if request.content_type not in allowed and not request.content_type.endswith("+json"):
        expected = " or ".join(sorted(allowed))
        raise ApiError(415, f"Content-Type must be {expected}, not {request.content_type}")
    too_large = ApiError(413, f"body exceeds {settings.limits.max_body_bytes} bytes")
    if request.content_length is not None and request.content_length > settings.limits.max_body_bytes:
        raise too_large
    try:
        if request.content.is_eof():
            # Already received whole (the usual small body): reading it cannot wait, so no timer is armed.
            body = await request.read()
        else:
            # A timeout scope, not wait_for: no extra task per request (measured by bench/, issue 4).
            async with asyncio.timeout(settings.server.body_read_timeout_s):
                body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise too_large from None
    except TimeoutError:
        raise ApiError(408, "body was not received in time") from None
    if not body.strip():
        raise ApiError(400, "request body is empty")
    return body


def guard_write(request: web.Request) -> BodyReservation:
    """Refuse a write below the disk floor, then reserve its body's bytes (503 unread when over budget)."""
    app = request.app
    settings = app[SETTINGS_KEY]
    app[DISK_KEY].check()
    # A chunked body may grow to the limit: reserve the limit.
    size = request.content_length
    size = settings.limits.max_body_bytes if size is None else min(size, settings.limits.max_body_bytes)
    return app[BUDGET_KEY].reserve(size, settings.server.retry_after_s)


async def post_decisions(request: web.Request) -> web.Response:
    """Validate, commit and report decisions; a 2xx means every accepted one is committed."""
    settings = request.app[SETTINGS_KEY]
    sink = request.app[SINK_KEY]
    quotas = request.app[QUOTAS_KEY]
    principal = principal_of(request)
    # Shed before reading and decoding the body: under a burst that is most of the cost.
    charge(request, 0)
    await quotas.check(principal.token_id, principal.daily_quota)
    sink.admit(1)
    reservation: Reservation | None = None

    def admit(records: int) -> None:
        nonlocal reservation
        # The token's own rate first: one tenant's flood is refused before it can fill the shared queue.
        charge(request, records)
        sink.admit(records)
        # Last: nothing may refuse the request between holding its records against the quota and the `finally`.
        reservation = quotas.reserve(principal.token_id, principal.daily_quota, records)

    results: list[WriteResult] = []
    created = 0
    try:
        async with guard_write(request):
            body = await read_body(request, allow_ndjson=True)
            checked, batch = check_decisions(
                body,
                ndjson=request.content_type in NDJSON_TYPES,
                request_max_records=settings.limits.request_max_records,
                record_max_bytes=settings.limits.max_record_bytes,
                admit=admit,
                window=TimeWindow(settings.limits.max_future_skew_s, settings.limits.max_past_age_s),
            )
            del body
        checked = [stamp(principal, item) if isinstance(item, Accepted) else item for item in checked]
        accepted: list[WriteItem] = [item for item in checked if isinstance(item, Accepted)]
        if reservation is not None:
            for item in accepted:
                assert isinstance(item, Accepted)
                item.quota = reservation.charge
        results = await sink.commit(accepted) if accepted else []
        created = sum(result.status in COUNTED for result in results)
    except asyncio.CancelledError:
        # The client left; the writer may still commit its records: count them all until the next read corrects it.
        created = reservation.records if reservation is not None else 0
        raise
    finally:
        quotas.settle(reservation, created)
    request.app[METRICS_KEY].count_records(request, checked, (result.status for result in results))
    if not batch:
        only = checked[0]
        if not isinstance(only, Accepted):
            raise ApiError.from_problem(only)
        return json_reply(decision_reply(only, results[0]), 202 if results[0].status == "accepted" else 200)
    reply, status = batch_reply(checked, results)
    return json_reply(reply, status)


async def post_sessions(request: web.Request) -> web.Response:
    """Create or update a session's state and descriptive fields."""
    sink = request.app[SINK_KEY]
    charge(request, 1)
    sink.admit(1)
    async with guard_write(request):
        update = stamp_session(principal_of(request), check_session(await read_body(request, allow_ndjson=False)))
    update.changed_by = changed_by(request)
    results = await sink.commit([update])
    if results[0].status == "forbidden":
        raise ApiError(403, results[0].body.decode())
    if results[0].status == "conflict":
        raise ApiError(409, results[0].body.decode(), field="$.state")
    return json_reply(results[0].body)


def changed_by(request: web.Request) -> str:
    """Name who asked for a session change: the token (by name or id, never its secret), else the peer."""
    principal = principal_of(request)
    if principal.token_id is not None:
        return f"token:{principal.name or principal.token_id}"
    return f"peer:{request.remote or 'unknown'}"
