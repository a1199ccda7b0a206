"""The `/sinks` operations of the OpenAPI document (docs/streaming.md)."""

from __future__ import annotations

from typing import Any

from cavra_ingest.core.sinks import EVENTS, KINDS, STATES
from cavra_ingest.http.openapi_parts import JSON, errors, int_param, op, path_param

STREAMS = {
    "type": "array",
    "items": {"type": "string", "enum": list(EVENTS)},
    "minItems": 1,
    "uniqueItems": True,
    "description": "the streams the sink follows: decisions (the default), access (sign-ins, sign-outs, refusals,"
    " session expiries, tokens created or revoked: GET /access-events), or both",
}
SINK = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "kind": {"type": "string", "enum": list(KINDS)},
        "target": {"type": "string"},
        "filter": {"type": "string", "description": "a GET /decisions query string (decisions only)"},
        "state": {"type": "string", "enum": list(STATES)},
        "tenant_id": {"type": ["string", "null"]},
        "events": STREAMS,
        "created_at": {"type": "string"},
        "delivered": {"type": "integer"},
        "failed": {"type": "integer"},
        "dead_letters": {"type": "integer"},
        "lag_records": {
            "type": "integer",
            "description": "committed decisions after the sink's cursor, not yet read by it, whether or not its"
            " filter and tenant select them (at most 1,000,000 counted)",
        },
        "lag_seconds": {"type": "number", "description": "seconds since the sink had read every committed decision"},
        "last_error": {"type": ["string", "null"]},
        "last_success_at": {"type": ["number", "null"]},
        "access_delivered": {"type": "integer", "description": "access events delivered"},
        "access_lag_records": {"type": "integer", "description": "access events not yet delivered"},
        "secret": {"type": "string", "description": "only in the 201 of a webhook whose secret was made here"},
    },
}
CREATE = {
    "type": "object",
    "required": ["name", "kind", "target"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"},
        "kind": {"type": "string", "enum": list(KINDS)},
        "target": {"type": "string", "description": "URL; tcp:// or tls://host:port for syslog; a folder for parquet"},
        "filter": {"type": "string", "description": "selects decisions; refused on a sink of access events only"},
        "events": STREAMS,
        "secret": {"type": "string", "description": "whsec_... for a webhook (made when left out), the HEC token"},
        "start": {"type": "string", "enum": ["beginning", "now"]},
        "tenant_id": {"type": "string"},
        "state": {"type": "string", "enum": list(STATES)},
    },
}
PATCH = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"filter": {"type": "string"}, "state": {"type": "string", "enum": list(STATES)}, "events": STREAMS},
}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {JSON: {"schema": schema}}}


def _reply(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


NAME = [path_param("name")]
LIST = {"type": "object", "properties": {"items": {"type": "array", "items": SINK}}}
DEAD = {"type": "object", "properties": {"items": {"type": "array", "items": {"type": "object"}},
        "next_after": {"type": ["integer", "null"]}}}  # fmt: skip
SINK_OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/sinks"): op(
        "Add a sink; it starts at the beginning of the log unless `start` is `now`",
        {"201": _reply(SINK, "added"), **errors(400, 409)},
        requestBody=_body(CREATE),
    ),
    ("GET", "/sinks"): op("List the sinks the caller may manage", {"200": _reply(LIST, "the sinks")}),
    ("GET", "/sinks/{name}"): op(
        "A sink's state and delivery progress", {"200": _reply(SINK, "the sink"), **errors(404)}, parameters=NAME
    ),
    ("PATCH", "/sinks/{name}"): op(
        "Pause, resume, or change the filter or the streams followed",
        {"200": _reply(SINK, "changed"), **errors(400, 404)},
        parameters=NAME,
        requestBody=_body(PATCH),
    ),
    ("DELETE", "/sinks/{name}"): op(
        "Remove a sink, its cursor and its dead letters",
        {"204": {"description": "removed"}, **errors(404)},
        parameters=NAME,
    ),
    ("GET", "/sinks/{name}/dead"): op(
        "The sink's dead letters, oldest first",
        {"200": _reply(DEAD, "one page"), **errors(400, 404)},
        parameters=[
            *NAME,
            int_param("after", 0, 2**53, "`next_after` of the previous page"),
            int_param("limit", 1, 500, "1..500"),
        ],  # fmt: skip
    ),
    ("POST", "/sinks/{name}/replay"): op(
        "Send the dead letters once more; those delivered leave the list",
        {"200": _reply({"type": "object"}, "how many were delivered, how many are left"), **errors(404)},
        parameters=NAME,
    ),
}
