"""The OpenAPI 3.1 description of the API (`/openapi.json`) and its offline docs page (`/docs`)."""

from __future__ import annotations

import base64
import hashlib
import re
from functools import cache
from importlib import resources
from typing import Any

import msgspec
from aiohttp import web

from cavra_ingest import __version__
from cavra_ingest.http.openapi_parts import (
    DECISIONS_BODY,
    JSON,
    LISTING_ERRORS,
    RANGE,
    REF,
    RETRY_AFTER,
    SCHEMA_TYPES,
    SEARCH,
    errors,
    filters,
    int_param,
    json_body,
    op,
    paging,
    path_param,
    ref,
)
from cavra_ingest.http.openapi_signin import ACCESS_OPERATIONS, SIGNIN_OPERATIONS
from cavra_ingest.http.openapi_sinks import SINK_OPERATIONS
from cavra_ingest.http.routes.histogram import SECONDS
from cavra_ingest.http.routes.reads import DECISION_FILTERS, MAX_INTEGER, MAX_LIMIT, MAX_TIMELINE_LIMIT, SESSION_FILTERS

# Every route the service registers, by (method, path); tests check the router and this table agree both ways.
OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/decisions"): op(
        "Store one decision, a JSON array of them, or NDJSON; 2xx only after COMMIT",
        {
            "200": json_body(
                {"oneOf": [ref("DecisionReply"), ref("BatchReply")]}, "every record stored (or duplicate)"
            ),
            "202": json_body(
                {"oneOf": [ref("DecisionReply"), ref("BatchReply")]},
                "JetStream mode: every record durable in the log, committed by a worker shortly after",
            ),
            "207": json_body(ref("BatchReply"), "some records failed; the others are stored"),
            **errors(400, 408, 409, 413, 415, 422, 503),
        },
        requestBody=DECISIONS_BODY,
    ),
    ("GET", "/decisions"): op(
        "List decisions, newest first, then decision_id",
        {"200": json_body(ref("DecisionPage"), "one page"), **LISTING_ERRORS},
        parameters=filters(DECISION_FILTERS) + RANGE + SEARCH + paging(MAX_LIMIT),
    ),
    ("GET", "/decisions/{decision_id}"): op(
        "Get one decision",
        {"200": json_body(ref("DecisionRecord"), "the record"), **errors(404)},
        parameters=[path_param("decision_id")],
    ),
    ("GET", "/decisions/facets"): op(
        "Count matches per value of the sidebar fields, for the current filter",
        {"200": json_body(ref("Facets"), "top values with counts"), **LISTING_ERRORS},
        parameters=filters(DECISION_FILTERS) + RANGE + SEARCH + [int_param("top", 1, 100, "values per field, 1..100")],
    ),
    ("GET", "/decisions/histogram"): op(
        "Count matches per time bucket and outcome, for a chart over the filtered decisions",
        {"200": json_body(ref("Histogram"), "buckets, oldest first, empty ones included"), **LISTING_ERRORS},
        parameters=filters(DECISION_FILTERS)
        + RANGE
        + SEARCH
        + [
            {
                "name": "interval",
                "in": "query",
                "description": "bucket width; auto picks about 60 buckets over the window",
                "schema": {"type": "string", "enum": ["auto", *SECONDS]},
            }
        ],
    ),
    ("GET", "/decisions.ndjson"): op(
        "Export every matching decision, one JSON record per line",
        {
            "200": {"description": "stream", "content": {"application/x-ndjson": {"schema": {"type": "string"}}}},
            **LISTING_ERRORS,
        },
        parameters=filters(DECISION_FILTERS) + RANGE + SEARCH,
    ),
    ("GET", "/decisions.csv"): op(
        "Export every matching decision as CSV with a header row",
        {"200": {"description": "stream", "content": {"text/csv": {"schema": {"type": "string"}}}}, **LISTING_ERRORS},
        parameters=filters(DECISION_FILTERS) + RANGE + SEARCH,
    ),
    ("POST", "/sessions"): op(
        "Set a session's state and descriptive fields (counts always come from its decisions)",
        {"200": json_body(ref("SessionRecord"), "the summary"), **errors(400, 408, 409, 413, 415, 422, 503)},
        requestBody={"required": True, "content": {JSON: {"schema": ref("SessionIn")}}},
    ),
    ("GET", "/sessions"): op(
        "List session summaries, most recently updated first",
        {"200": json_body(ref("SessionPage"), "one page"), **LISTING_ERRORS},
        parameters=filters(SESSION_FILTERS)
        + RANGE
        + [int_param("min_blocked", 0, MAX_INTEGER, "at least this many blocked decisions")]
        + paging(MAX_LIMIT),
    ),
    ("GET", "/sessions.ndjson"): op(
        "Export every matching session summary, one JSON record per line, most recently updated first",
        {
            "200": {"description": "stream", "content": {"application/x-ndjson": {"schema": {"type": "string"}}}},
            **LISTING_ERRORS,
        },
        parameters=filters(SESSION_FILTERS)
        + RANGE
        + [int_param("min_blocked", 0, MAX_INTEGER, "at least this many blocked decisions")],
    ),
    ("GET", "/sessions.csv"): op(
        "Export every matching session summary as CSV with a header row",
        {"200": {"description": "stream", "content": {"text/csv": {"schema": {"type": "string"}}}}, **LISTING_ERRORS},
        parameters=filters(SESSION_FILTERS)
        + RANGE
        + [int_param("min_blocked", 0, MAX_INTEGER, "at least this many blocked decisions")],
    ),
    ("GET", "/sessions/{session_id}"): op(
        "Get one session summary",
        {"200": json_body(ref("SessionRecord"), "the summary"), **errors(404)},
        parameters=[path_param("session_id")],
    ),
    ("GET", "/sessions/{session_id}/decisions"): op(
        "A session's summary and decisions, oldest first, for auditors",
        {"200": json_body(ref("Timeline"), "one page of the timeline"), **errors(400, 404)},
        parameters=[path_param("session_id"), *RANGE, *paging(MAX_TIMELINE_LIMIT)],
    ),
    ("GET", "/healthz"): op(
        "Liveness and queue depth; 503 while shutting down",
        {"200": json_body(ref("Health"), "serving"), "503": json_body(ref("Health"), "shutting down")},
    ),
    ("GET", "/console/config"): op("Settings the console needs", {"200": json_body(ref("ConsoleConfig"), "config")}),
    ("GET", "/openapi.json"): op(
        "This document", {"200": {"description": "OpenAPI 3.1", "content": {JSON: {"schema": {"type": "object"}}}}}
    ),
    ("GET", "/auth/whoami"): op(
        "The calling token (id, name, scopes) and the tenant it sees; never its secret",
        {"200": json_body(ref("Whoami"), "the caller")},
    ),
    ("GET", "/docs"): op(
        "This document as a page",
        {"200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}},
    ),  # fmt: skip
    ("GET", "/readyz"): op(
        "Readiness: 200 when the store is open, migrated and answering and the server is not draining",
        {
            "200": json_body(ref("Readiness"), "ready"),
            "503": json_body(ref("Readiness"), "not ready; `reason` says why"),
        },
    ),
    ("GET", "/metrics"): op(
        "Prometheus metrics in the text exposition format (read or admin scope once tokens are configured)",
        {"200": {"description": "metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}},
    ),
}

# The audit log (docs/audit-log.md); 404 also when the store keeps no log, 503 until a checkpoint covers it.
NOTE = {"200": {"description": "signed note", "content": {"text/plain": {"schema": {"type": "string"}}}}}
SIZE = "a signed checkpoint's tree size"
OPERATIONS.update({
    ("GET", "/log/checkpoint"): op("The latest signed checkpoint (C2SP tlog-checkpoint, signed-note)",
                                   {**NOTE, **errors(400, 404, 503)}),
    ("GET", "/log/public-key"): op(
        "The checkpoints' verifier key: <name>+<key id>+<base64(0x01 || Ed25519 key)>",
        {"200": {"description": "verifier key", "content": {"text/plain": {"schema": {"type": "string"}}}},
         **errors(400, 404)},
    ),
    ("GET", "/decisions/{decision_id}/proof"): op(
        "A decision's inclusion proof in the latest (or the given) signed checkpoint",
        {"200": json_body(ref("InclusionProof"), "leaf index, proof and checkpoint"), **errors(400, 404, 503)},
        parameters=[path_param("decision_id"), int_param("tree_size", 1, MAX_INTEGER, SIZE)],
    ),
    ("GET", "/log/consistency"): op(
        "A consistency proof between two signed checkpoints",
        {"200": json_body(ref("ConsistencyProof"), "the proof"), **errors(400, 404)},
        parameters=[{**int_param("first", 1, MAX_INTEGER, SIZE), "required": True},
                    {**int_param("second", 1, MAX_INTEGER, SIZE), "required": True}],
    ),
    ("GET", "/sessions/{session_id}/evidence"): op(
        "A session's evidence bundle: records as stored, inclusion proofs, checkpoint, signed manifest, key",
        {"200": json_body(ref("Evidence"), "bundle (`cavra-ingest evidence verify FILE`)"), **errors(400, 404)},
        parameters=[path_param("session_id")],
    ),
})  # fmt: skip

# JetStream mode (docs/scale-out.md): what workers refused after a 202.
OPERATIONS[("GET", "/ingest/rejections")] = op(
    "Records a JetStream worker could not store after their 202 (conflict, forbidden, rejected), oldest first",
    {"200": json_body(ref("RejectionPage"), "one page (always empty in the embedded mode)"), **errors(400)},
    parameters=[
        {"name": name, "in": "query", "description": f"exact {name}", "schema": {"type": "string"}}
        for name in ("decision_id", "session_id")
    ]
    + [int_param("after", 0, MAX_INTEGER, "`next_after` of the previous page"), int_param("limit", 1, 500, "1..500")],
)


AUTH_ERRORS = {
    "401": json_body(ref("Error"), "no token, or an unknown, expired or revoked one (see WWW-Authenticate)"),
    "403": json_body(ref("Error"), "the token lacks the scope, or names another tenant"),
}


def secure(operations: dict[tuple[str, str], dict[str, Any]]) -> None:
    """Mark every operation the auth rule protects with the bearer scheme and its 401/403 (and 429 for writes)."""
    from cavra_ingest.http.auth import required_scope

    for (method, path), operation in operations.items():
        scope = required_scope(method, path)
        if scope is None:
            continue
        operation["security"] = [{"bearer": [scope]}]
        operation["responses"] = {**AUTH_ERRORS, **operation["responses"]}
        if scope == "ingest":
            over = "over the token's rate (--rate)"
            if (method, path) == ("POST", "/decisions"):
                over += " or its daily quota (--daily-quota; the whole request is refused, Retry-After: to 00:00 UTC)"
            operation["responses"]["429"] = json_body(ref("Error"), over, **{"Retry-After": RETRY_AFTER["Retry-After"]})


OPERATIONS.update(SINK_OPERATIONS)
OPERATIONS.update(ACCESS_OPERATIONS)
secure(OPERATIONS)


@cache
def components() -> dict[str, Any]:
    """JSON Schemas of the records and replies, generated from the msgspec Structs."""
    _, schemas = msgspec.json.schema_components(SCHEMA_TYPES, ref_template=REF)
    # Unknown top-level fields are accepted and reported as `ignored_fields`, not refused.
    schemas["DecisionIn"].pop("additionalProperties", None)
    schemas["SessionIn"].pop("additionalProperties", None)
    return schemas


def described(method: str, path: str) -> bool:
    """Say whether a registered route belongs in the document (console pages, `/` that leads to them, HEAD do not)."""
    if method == "HEAD" or path == "/":
        return False
    return not (path.startswith("/console") and path != "/console/config")


def registered(app: web.Application) -> set[tuple[str, str]]:
    """Return the (method, path) pairs the app's router serves that the document must describe."""
    found = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if path is not None and described(route.method, path):
            found.add((route.method, path))
    return found


def build(app: web.Application) -> dict[str, Any]:
    """Describe exactly the routes registered in this app."""
    paths: dict[str, dict[str, Any]] = {}
    for method, path in sorted(registered(app)):
        operation = OPERATIONS.get((method, path)) or SIGNIN_OPERATIONS.get((method, path))
        if operation is not None:
            paths.setdefault(path, {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "cavra-ingest",
            "version": __version__,
            "description": "Durable, searchable records of what AI agents tried to do and what policy decided. "
            "Errors share one shape; 503 is always retryable (see docs/guarantees.md).",
        },
        "paths": paths,
        "components": {
            "schemas": components(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "cavra_... token"}},
        },
    }


async def spec(request: web.Request) -> web.Response:
    """Serve the OpenAPI document for this app."""
    return web.Response(body=msgspec.json.encode(build(request.app)), content_type=JSON)


@cache
def docs_page() -> tuple[bytes, str]:
    """Return the docs page and a CSP that allows exactly its inline script and style (by hash) and nothing else."""
    page = resources.files(__package__).joinpath("docs.html").read_bytes()
    hashes = {}
    for tag in ("script", "style"):
        inline = re.search(rb"<%s>(.*?)</%s>" % (tag.encode(), tag.encode()), page, re.DOTALL)
        assert inline is not None, f"docs.html has no inline {tag}"
        hashes[tag] = "'sha256-" + base64.b64encode(hashlib.sha256(inline.group(1)).digest()).decode() + "'"
    policy = (
        f"default-src 'none'; script-src {hashes['script']}; style-src {hashes['style']}; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return page, policy


async def docs(request: web.Request) -> web.Response:
    """Serve the self-contained docs page that renders /openapi.json."""
    page, policy = docs_page()
    return web.Response(
        body=page, content_type="text/html", charset="utf-8", headers={"Content-Security-Policy": policy}
    )
