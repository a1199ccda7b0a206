"""Building blocks of the OpenAPI description: schema references, parameters, bodies and error responses."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cavra_ingest.core.models import (
    OUTCOMES,
    SESSION_STATES,
    SEVERITIES,
    DecisionIn,
    DecisionRecord,
    SessionIn,
    SessionRecord,
)
from cavra_ingest.http.replies import (
    BatchReply,
    ConsistencyProof,
    ConsoleConfig,
    DecisionPage,
    DecisionReply,
    Error,
    Evidence,
    Facets,
    Health,
    Histogram,
    InclusionProof,
    Readiness,
    RejectionPage,
    SessionPage,
    Timeline,
    Whoami,
)
from cavra_ingest.http.routes.reads import MAX_INTEGER

JSON = "application/json"
REF = "#/components/schemas/{name}"


SCHEMA_TYPES = (
    DecisionIn,
    DecisionRecord,
    DecisionReply,
    SessionIn,
    SessionRecord,
    Error,
    BatchReply,
    DecisionPage,
    SessionPage,
    Timeline,
    Health,
    ConsoleConfig,
    Facets,
    Readiness,
    Whoami,
    InclusionProof,
    ConsistencyProof,
    Evidence,
    Histogram,
    RejectionPage,
)


def ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(name=name)}


def json_body(schema: dict[str, Any], description: str, **headers: Any) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {JSON: {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}
ERRORS = {
    400: "malformed request (JSON, UTF-8, query parameter); `parameter` or `field` names it",
    404: "no such record",
    408: "the body did not arrive within the read timeout",
    409: "the decision_id is stored with different content, or the session lifecycle refuses that state change",
    413: "body or batch over its limit",
    415: "Content-Type is not JSON (or NDJSON where accepted)",
    422: "a record failed validation; `field` is its JSON path",
}
UNAVAILABLE = json_body(
    ref("Error"),
    "retryable: queue full, store locked/read-only/full, or shutting down; nothing was written",
    **{"Retry-After": RETRY_AFTER["Retry-After"]},
)


def errors(*statuses: int) -> dict[str, Any]:
    found = {str(status): json_body(ref("Error"), ERRORS[status]) for status in statuses if status in ERRORS}
    if 503 in statuses:
        found["503"] = UNAVAILABLE
    return found


def array_param(name: str, enum: tuple[str, ...] | None = None) -> dict[str, Any]:
    items: dict[str, Any] = {"type": "string"}
    if enum:
        items["enum"] = list(enum)
    return {
        "name": name,
        "in": "query",
        "description": "exact match; repeat for OR; empty means no filter" + PREFIX_NOTE,
        "schema": {"type": "array", "items": items},
        "style": "form",
        "explode": True,
    }


def int_param(name: str, minimum: int, maximum: int, description: str) -> dict[str, Any]:
    schema = {"type": "integer", "minimum": minimum, "maximum": maximum}
    return {"name": name, "in": "query", "description": description, "schema": schema}


ENUMS = {"decision": OUTCOMES, "severity": SEVERITIES, "state": SESSION_STATES}
RANGE = [
    {"name": name, "in": "query", "description": f"{word} (RFC 3339 with offset)", "schema": {"type": "string",
     "format": "date-time"}}
    for name, word in (("since", "from this time, inclusive"), ("until", "up to this time, exclusive"))
]  # fmt: skip


def paging(max_limit: int) -> list[dict[str, Any]]:
    return [
        int_param("limit", 1, max_limit, f"page size, clamped to 1..{max_limit}"),
        int_param("offset", 0, MAX_INTEGER, "rows to skip (ignored with a cursor)"),
        {"name": "cursor", "in": "query", "description": "`next_cursor` of the previous page", "schema": {
            "type": "string"}},
        {"name": "count", "in": "query", "description": "false skips the total", "schema": {"type": "string",
         "enum": ["true", "false", "1", "0"]}},
    ]  # fmt: skip


def filters(names: Iterable[str]) -> list[dict[str, Any]]:
    return [array_param(name, ENUMS.get(name)) for name in sorted(names)]


SEARCH = [
    {
        "name": "q",
        "in": "query",
        "description": 'words or "quoted phrases" each found as a substring (ASCII case ignored) of target, rule_id,'
        " requested_operation, reason, policy_id, tool_name or mcp_server; at least one of 3+ characters",
        "schema": {"type": "string"},
    }
]
PREFIX_NOTE = "; a value ending in `*` matches by prefix (repository, agent_id, policy_pack, rule_id, action_type)"


def path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}


def op(summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"summary": summary, "responses": responses, **extra}


DECISIONS_BODY = {
    "required": True,
    "content": {
        JSON: {"schema": {"oneOf": [ref("DecisionIn"), {"type": "array", "items": ref("DecisionIn")}]}},
        # The records of the batch, sent one JSON object per line.
        "application/x-ndjson": {"schema": {"type": "array", "items": ref("DecisionIn")}},
    },
}
# 503: a count, facet or export chunk hit its statement time limit or found no heavy reader free.
LISTING_ERRORS = errors(400, 503)
