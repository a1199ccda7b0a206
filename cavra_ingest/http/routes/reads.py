"""Read routes: listings with allow-listed filters and paging, single records."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec
from aiohttp import web

from cavra_ingest.core.errors import ApiError
from cavra_ingest.core.models import ENCODER, OUTCOMES, SESSION_STATES, SEVERITIES, Timestamp, utc_text
from cavra_ingest.core.search import PREFIX_FILTERS, BadSearch, parse_terms, split_prefixes
from cavra_ingest.http.auth import bound_columns, scope_query, visible_payload
from cavra_ingest.http.guards import cancel_on_disconnect
from cavra_ingest.http.keys import (
    COUNTS_HEALTH_KEY,
    DELIVERY_KEY,
    ORIGINS_KEY,
    SEARCH_HEALTH_KEY,
    SETTINGS_KEY,
    SINK_KEY,
    STORE_KEY,
)
from cavra_ingest.http.middleware import json_reply
from cavra_ingest.http.replies import (
    ConsoleConfig,
    ConsoleEnums,
    ConsoleFilters,
    DecisionPage,
    Health,
    SessionPage,
    Timeline,
    stored,
)
from cavra_ingest.http.sinkmetrics import sinks_health
from cavra_ingest.store import ListQuery, Page
from cavra_ingest.store.base import DECISION_FILTERS, FACET_FIELDS, SESSION_FILTERS

ENUMS: dict[str, tuple[str, ...]] = {"decision": OUTCOMES, "severity": SEVERITIES, "state": SESSION_STATES}
PAGING = frozenset({"limit", "offset", "cursor", "count"})
RANGE = frozenset({"since", "until"})
# An unencoded `+` in a query string arrives as a space: `...T10:00:00 02:00` means `+02:00`.
_SPACED_OFFSET = re.compile(r"(.*\d) (\d\d:\d\d)")
DEFAULT_LIMIT, MAX_LIMIT = 50, 500
MAX_INTEGER = 2**53  # beyond this SQLite cannot bind it and no store holds that many rows
TIMELINE_LIMIT, MAX_TIMELINE_LIMIT = 500, 5000


def bad_query(parameter: str, detail: str) -> ApiError:
    """A query parameter is unknown or malformed: a 400 naming it."""
    return ApiError(400, detail, parameter=parameter)


def integer(params: Mapping[str, str], name: str, default: int) -> int:
    raw = params.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_query(name, f"{name} must be an integer, not {raw!r}") from None
    if abs(value) > MAX_INTEGER:
        raise bad_query(name, f"{name} is out of range")
    return value


def _moment(params: Mapping[str, str], name: str) -> str | None:
    raw = params.get(name, "")
    if raw == "":
        return None
    spaced = _SPACED_OFFSET.fullmatch(raw)
    if spaced:
        raw = f"{spaced.group(1)}+{spaced.group(2)}"
    try:
        return utc_text(msgspec.convert(raw, Timestamp))
    except (msgspec.ValidationError, OverflowError):
        raise bad_query(name, f"{name} must be an RFC 3339 date-time with an offset, not {raw!r}") from None


def _fingerprint(query: ListQuery, scope: str) -> str:
    # Binds a cursor to the filters and order it was made for.
    shape: list[Any] = [scope, query.equals, query.since, query.until, query.min_blocked, query.oldest_first]
    if query.prefixes or query.terms:
        shape += [query.prefixes, query.terms]
    return hashlib.blake2b(ENCODER.encode(shape), digest_size=8).hexdigest()


def encode_cursor(query: ListQuery, scope: str, key: tuple[str, str]) -> str:
    raw = ENCODER.encode({"k": list(key), "f": _fingerprint(query, scope)})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str, query: ListQuery, scope: str) -> tuple[str, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = msgspec.json.decode(raw, type=dict[str, Any])
        time_key, id_key = data["k"]
        fingerprint = data["f"]
    except (binascii.Error, msgspec.DecodeError, msgspec.ValidationError, KeyError, TypeError, ValueError):
        raise bad_query("cursor", "cursor is not one this service issued") from None
    if fingerprint != _fingerprint(query, scope) or not isinstance(time_key, str) or not isinstance(id_key, str):
        raise bad_query("cursor", "cursor was issued for other filters or another order")
    if "\x00" in time_key or "\x00" in id_key:
        # No stored key holds NUL, and PostgreSQL cannot even bind it: a forged cursor.
        raise bad_query("cursor", "cursor is not one this service issued")
    return time_key, id_key


async def stored_values(request: web.Request, table: str, filters: Iterable[str]) -> dict[str, frozenset[str]]:
    """Find the out-of-enum filter values that stored rows hold (CAVRA stores any string, e.g. `informational`).

    A value no row holds stays a 400 naming the allowed values. Values are checked one at a time and the
    first unheld one ends the search: a typo costs one look-up, however many values the query repeats. A bound
    caller's look-ups see its own tenant's rows only, so a 400 or 200 tells nothing of other tenants' values.
    """
    held: dict[str, frozenset[str]] = {}
    store = request.app[STORE_KEY]
    within = bound_columns(request)
    for name in sorted(frozenset(filters) & ENUMS.keys()):
        strays = sorted({v for v in request.query.getall(name, []) if v and v not in ENUMS[name] and "\x00" not in v})
        found: list[str] = []
        for value in strays:
            if not await store.holds(table, name, value, within):
                return {**held, name: frozenset(found)}
            found.append(value)
        if found:
            held[name] = frozenset(found)
    return held


def parse_query(
    request: web.Request,
    filters: Iterable[str],
    *,
    scope: str,
    held: Mapping[str, frozenset[str]] | None = None,
    extra: Iterable[str] = (),
    fixed: tuple[tuple[str, tuple[str, ...]], ...] = (),
    default_limit: int = DEFAULT_LIMIT,
    max_limit: int = MAX_LIMIT,
    oldest_first: bool = False,
    paging: bool = True,
    search: bool = False,
) -> ListQuery:
    """Turn query arguments into a ListQuery; unknown or malformed ones are a 400 naming them."""
    if search:
        extra = (*extra, "q")
    allowed = frozenset(filters) | RANGE | frozenset(extra) | (PAGING if paging else frozenset())
    params = request.query
    for name in params:
        if name not in allowed:
            if name in PAGING:
                raise bad_query(name, f"{name} does not apply here: the answer covers every match")
            raise bad_query(name, f"unknown query parameter {name!r}")
    equals = list(fixed)
    prefixes: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = []
    for name in sorted(frozenset(filters)):
        # Empty values mean "no filter" (SPEC §3); repeated values mean OR, in any order.
        values = tuple(sorted({v for v in params.getall(name, []) if v != ""}))
        if not values:
            continue
        choices = ENUMS.get(name)
        for value in values:
            if "\x00" in value:
                # No store holds NUL (ingest refuses it), and PostgreSQL cannot even compare with it.
                raise bad_query(name, f"{name} must not contain NUL characters")
            if choices is not None and value not in choices and value not in (held or {}).get(name, ()):
                raise bad_query(name, f"{name} must be one of {', '.join(choices)}, not {value!r}")
        exact, starts = split_prefixes(values) if name in PREFIX_FILTERS else (values, ())
        if starts:
            prefixes.append((name, exact, starts))
        else:
            equals.append((name, values))
    for name in PAGING | RANGE | frozenset(extra):
        if len(params.getall(name, [])) > 1:
            raise bad_query(name, f"{name} may be given only once")
    min_blocked = None
    if "min_blocked" in allowed and params.get("min_blocked", "") != "":
        min_blocked = integer(params, "min_blocked", 0)
    # Cursor pages skip the count unless asked: the client has the total from the first page.
    count = params.get("count", "").lower() or ("false" if params.get("cursor") else "true")
    if count not in {"true", "false", "1", "0"}:
        raise bad_query("count", "count must be true or false")
    query = ListQuery(
        equals=tuple(equals),
        since=_moment(params, "since"),
        until=_moment(params, "until"),
        min_blocked=min_blocked,
        limit=min(max(integer(params, "limit", default_limit), 1), max_limit),
        offset=max(integer(params, "offset", 0), 0),
        with_total=count not in {"false", "0"},
        oldest_first=oldest_first,
        prefixes=tuple(prefixes),
        terms=search_terms(request) if search else (),
    )
    # A tenant-bound token reads its tenant only, whatever it asked for (403 if it named another).
    query = scope_query(request, query)
    token = params.get("cursor", "")
    if token:
        after = decode_cursor(token, query, scope)
        query = dataclasses.replace(query, after=after, offset=0)
    return query


def search_terms(request: web.Request) -> tuple[str, ...]:
    """Parse `q` within the configured limits."""
    settings = request.app[SETTINGS_KEY]
    try:
        return parse_terms(
            request.query.get("q", ""),
            max_chars=settings.limits.search_max_chars,
            max_terms=settings.limits.search_max_terms,
        )
    except BadSearch as exc:
        raise bad_query("q", str(exc)) from None


def next_cursor(page: Page, query: ListQuery, scope: str) -> str | None:
    """Return the cursor of the page after this one, when there may be one."""
    if page.last_key is not None and len(page.items) == query.limit:
        return encode_cursor(query, scope, page.last_key)
    return None


@cancel_on_disconnect
async def list_decisions(request: web.Request) -> web.Response:
    held = await stored_values(request, "decisions", DECISION_FILTERS)
    query = parse_query(request, DECISION_FILTERS, scope="decisions", held=held, search=True)
    page = await request.app[STORE_KEY].list_decisions(query)
    cursor = next_cursor(page, query, "decisions")
    return json_reply(DecisionPage(stored(page.items), page.total, query.limit, query.offset, cursor))


@cancel_on_disconnect
async def list_sessions(request: web.Request) -> web.Response:
    held = await stored_values(request, "sessions", SESSION_FILTERS)
    query = parse_query(request, SESSION_FILTERS, scope="sessions", extra=("min_blocked",), held=held)
    page = await request.app[STORE_KEY].list_sessions(query)
    cursor = next_cursor(page, query, "sessions")
    return json_reply(SessionPage(stored(page.items), page.total, query.limit, query.offset, cursor))


def stored_id(request: web.Request, name: str) -> str | None:
    """Return the route's id, or None when it cannot name a stored record (it holds a NUL)."""
    value = request.match_info[name]
    return None if "\x00" in value else value


async def get_decision(request: web.Request) -> web.Response:
    decision_id = stored_id(request, "decision_id")
    body = None if decision_id is None else await request.app[STORE_KEY].get_decision(decision_id)
    # Another tenant's record is "not found", so its existence does not leak.
    if body is None or not visible_payload(request, body):
        raise ApiError(404, "decision not found")
    return json_reply(body)


async def get_session(request: web.Request) -> web.Response:
    session_id = stored_id(request, "session_id")
    body = None if session_id is None else await request.app[STORE_KEY].get_session(session_id)
    if body is None or not visible_payload(request, body):
        raise ApiError(404, "session not found")
    return json_reply(body)


async def session_timeline(request: web.Request) -> web.Response:
    """Return a session's summary and its decisions oldest first, for auditors."""
    session_id = stored_id(request, "session_id")
    store = request.app[STORE_KEY]
    summary = None if session_id is None else await store.get_session(session_id)
    if session_id is None or summary is None or not visible_payload(request, summary):
        raise ApiError(404, "session not found")
    scope = f"timeline:{session_id}"
    query = parse_query(
        request,
        (),
        scope=scope,
        fixed=(("session_id", (session_id,)),),
        default_limit=TIMELINE_LIMIT,
        max_limit=MAX_TIMELINE_LIMIT,
        oldest_first=True,
    )
    page = await store.list_decisions(query)
    cursor = next_cursor(page, query, scope)
    reply = Timeline(stored([summary])[0], stored(page.items), page.total, query.limit, query.offset, cursor)
    return json_reply(reply)


async def healthz(request: web.Request) -> web.Response:
    health = request.app[SINK_KEY].health()
    reply = Health(
        status="stopping" if health.closing else "ok",
        store=request.app[STORE_KEY].kind,
        queued_records=health.queued_records,
        queue_capacity=health.queue_capacity,
        writer=health.stats,
        search=request.app[SEARCH_HEALTH_KEY]() if SEARCH_HEALTH_KEY in request.app else None,
        counts=request.app[COUNTS_HEALTH_KEY]() if COUNTS_HEALTH_KEY in request.app else None,
        sinks=sinks_health(request.app[DELIVERY_KEY]) if DELIVERY_KEY in request.app else None,
    )
    return json_reply(reply, 503 if health.closing else 200)


async def console_config(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    origins: frozenset[str] = request.app[ORIGINS_KEY] if ORIGINS_KEY in request.app else frozenset()
    reply = ConsoleConfig(
        activity_mode=request.app[STORE_KEY].kind,
        request_max_records=settings.limits.request_max_records,
        max_body_bytes=settings.limits.max_body_bytes,
        default_limit=DEFAULT_LIMIT,
        max_limit=MAX_LIMIT,
        # The console builds its filter form, choices and facet sidebar from these, never from copies.
        filters=ConsoleFilters(list(DECISION_FILTERS), [*SESSION_FILTERS, "min_blocked"]),
        enums=ConsoleEnums(list(OUTCOMES), list(SEVERITIES), list(SESSION_STATES)),
        facet_fields=list(FACET_FIELDS),
        metadata_mode="api",
        api_base_url=settings.console.api_base_url or f"{request.scheme}://{request.host}",
        cors_origins=sorted(origins),
    )
    return json_reply(reply)
