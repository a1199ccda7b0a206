"""Hostile requests: each gets a precise status and the one JSON error shape, and the server keeps serving."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient
from yarl import URL

from cavra_ingest.http.routes.reads import DECISION_FILTERS, SESSION_FILTERS
from tests.conftest import MakeClient, decision

JSON = "application/json"
NDJSON = "application/x-ndjson"
LIMITS = {"request_max_records": 5, "max_body_bytes": 200_000}


def body(**fields: Any) -> bytes:
    return json.dumps(decision(**fields)).encode()


def nested(depth: int) -> bytes:
    return json.dumps(decision(context={})).replace("{}", '{"a":' * depth + "1" + "}" * depth).encode()


# (name, body, content type, status, error code, field)
CASES: list[tuple[str, bytes, str | None, int, str, str | None]] = [
    ("malformed JSON", b'{"decision": "allow", ', JSON, 400, "bad_request", None),
    ("truncated array", b'[{"decision":"allow","session_id":"s"}', JSON, 400, "bad_request", None),
    ("not JSON at all", b"hello", JSON, 400, "bad_request", None),
    ("trailing garbage", body() + b"}", JSON, 400, "bad_request", None),
    ("NaN literal", b'{"decision":"allow","session_id":"s","context":{"a":NaN}}', JSON, 400, "bad_request", None),
    ("text/plain", body(), "text/plain", 415, "unsupported_media_type", None),
    (
        "form encoded",
        b"decision=allow&session_id=s",
        "application/x-www-form-urlencoded",
        415,
        "unsupported_media_type",
        None,
    ),
    ("no content type", body(), None, 415, "unsupported_media_type", None),
    ("multipart", b"--x\r\n\r\n{}\r\n--x--", "multipart/form-data; boundary=x", 415, "unsupported_media_type", None),
    ("empty body", b"", JSON, 400, "bad_request", None),
    ("whitespace body", b"  \n\t ", JSON, 400, "bad_request", None),
    ("empty NDJSON", b"\n\n", NDJSON, 400, "bad_request", None),
    ("empty array", b"[]", JSON, 400, "bad_request", None),
    ("null", b"null", JSON, 422, "validation_error", None),
    ("bare number", b"42", JSON, 422, "validation_error", None),
    ("bare string", b'"allow"', JSON, 422, "validation_error", None),
    ("array of numbers", b"[1, 2]", JSON, 422, "validation_error", None),
    ("array of arrays", b"[[{}]]", JSON, 422, "validation_error", None),
    (
        "over the record limit",
        json.dumps([decision() for _ in range(6)]).encode(),
        JSON,
        413,
        "payload_too_large",
        None,
    ),
    ("deeply nested context", nested(5000), JSON, 422, "validation_error", "$"),
    ("deeply nested array body", b"[" * 100_000 + b"]" * 100_000, JSON, 400, "bad_request", None),
    ("id over 256 chars", body(decision_id="d" * 257), JSON, 422, "validation_error", "$.decision_id"),
    ("session over 256 chars", body(session_id="s" * 300), JSON, 422, "validation_error", "$.session_id"),
    ("target over 8 KiB", body(target="t" * 9000), JSON, 422, "validation_error", "$.target"),
    ("record over 64 KiB", body(context={"blob": "x" * 70_000}), JSON, 422, "validation_error", "$"),
    ("raw control character", b'{"decision":"allow","session_id":"a\x01b"}', JSON, 400, "bad_request", None),
    ("invalid UTF-8", b'{"decision":"allow","session_id":"\xff\xfe"}', JSON, 400, "bad_request", None),
    ("invalid UTF-8 in a batch", b'[{"decision":"allow","session_id":"\xc3\x28"}]', JSON, 400, "bad_request", None),
    ("invalid UTF-8 in NDJSON", b'{"decision":"allow","session_id":"\xff"}\n', NDJSON, 400, "bad_request", None),
    ("encoded surrogate (CESU-8)", b'{"decision":"allow","session_id":"\xed\xa0\x80"}', JSON, 400, "bad_request", None),
    ("escaped lone surrogate", b'{"decision":"allow","session_id":"\\ud800"}', JSON, 400, "bad_request", None),
    ("number for session_id", b'{"decision":"allow","session_id":5}', JSON, 422, "validation_error", "$.session_id"),
    ("number for agent_id", body(agent_id=7), JSON, 422, "validation_error", "$.agent_id"),
    ("bool for target", body(target=True), JSON, 422, "validation_error", "$.target"),
    ("object for evidence", body(evidence_refs={"a": 1}), JSON, 422, "validation_error", "$.evidence_refs"),
    ("list for context", body(context=[1]), JSON, 422, "validation_error", "$.context"),
    ("unknown outcome", body(decision="maybe"), JSON, 422, "validation_error", "$.decision"),
    ("missing decision", b'{"session_id":"s"}', JSON, 422, "validation_error", None),
    ("bad tenant id", body(tenant_id="a b"), JSON, 422, "validation_error", "$.tenant_id"),
    (
        "integer beyond 64 bits",
        b'{"decision":"allow","session_id":"s","context":{"a":1' + b"0" * 5000 + b"}}",
        JSON,
        422,
        "validation_error",
        None,
    ),
    ("timestamp without offset", body(timestamp="2026-03-01T10:00:00"), JSON, 422, "validation_error", "$.timestamp"),
    ("date only", body(timestamp="2026-03-01"), JSON, 422, "validation_error", "$.timestamp"),
    ("year 10000", body(timestamp="10000-01-01T00:00:00+00:00"), JSON, 422, "validation_error", "$.timestamp"),
    ("year 0", body(timestamp="0000-01-01T00:00:00+00:00"), JSON, 422, "validation_error", "$.timestamp"),
    ("month 13", body(timestamp="2026-13-01T00:00:00+00:00"), JSON, 422, "validation_error", "$.timestamp"),
    ("before year 1 in UTC", body(timestamp="0001-01-01T00:00:00+01:00"), JSON, 422, "validation_error", "$.timestamp"),
    ("after 9999 in UTC", body(timestamp="9999-12-31T23:59:59-01:00"), JSON, 422, "validation_error", "$.timestamp"),
    ("timestamp as number", body(timestamp=1767225600), JSON, 422, "validation_error", "$.timestamp"),
    # Issue 18: a record dated 9999 would sit first in every newest-first list.
    ("year 9999", body(timestamp="9999-12-31T00:00:00+00:00"), JSON, 422, "validation_error", "$.timestamp"),
    ("a year ahead", body(timestamp="2099-01-01T00:00:00+00:00"), JSON, 422, "validation_error", "$.timestamp"),
    ("array of numbers over the limit", b"[" + b"1," * 50_000 + b"1]", JSON, 413, "payload_too_large", None),
    ("NDJSON lines over the limit", b"{}\n" * 50_000, NDJSON, 413, "payload_too_large", None),
    (
        "NUL at the bottom of a deep context",
        json.dumps(decision(context={"a": 0}))
        .replace('"a": 0', '"a": ' + "[" * 500 + '"\\u0000"' + "]" * 500)
        .encode(),
        JSON,
        422,
        "validation_error",
        "$.context.a" + "[0]" * 500,
    ),
    (
        "wrong schema version",
        body(schema_version="cavra.decision.v9"),
        JSON,
        422,
        "validation_error",
        "$.schema_version",
    ),
]


async def assert_alive(client: TestClient) -> None:
    """The server still answers reads and commits a valid write."""
    assert (await client.get("/healthz")).status == 200
    assert (await client.post("/decisions", json=decision())).status == 200


@pytest.mark.parametrize(("name", "raw", "content_type", "status", "code", "field"), CASES, ids=[c[0] for c in CASES])
async def test_hostile_decision_body(
    make_client: MakeClient, name: str, raw: bytes, content_type: str | None, status: int, code: str, field: str | None
) -> None:
    client = await make_client(**LIMITS)
    headers = {"Content-Type": content_type} if content_type else {}
    response = await client.post("/decisions", data=raw, headers=headers, skip_auto_headers=["Content-Type"])
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    reply = await response.json()
    # A batch whose records all failed alike carries its per-record errors; the first names the field.
    error = reply["results"][0]["error"] if "results" in reply else reply
    assert reply["status"] == status and error["error"] == code and reply["detail"], reply
    if field is not None:
        assert error.get("field") == field, error
    listing = await (await client.get("/decisions")).json()
    assert listing["total"] == 0  # nothing of a rejected request was stored
    await assert_alive(client)


async def test_hostile_session_bodies(client: TestClient) -> None:
    cases = [
        (b'{"session_id":"s","state":"bogus"}', 422, "$.state"),
        (b'{"session_id":"s","decision_count":"x"}', 422, "$.decision_count"),
        (b'{"session_id":"\xff"}', 400, None),
        (b'{"session_id":', 400, None),
        (b"", 400, None),
        (b'{"state":"completed"}', 422, None),
    ]
    for raw, status, field in cases:
        response = await client.post("/sessions", data=raw, headers={"Content-Type": JSON})
        assert response.status == status, (raw, await response.text())
        reply = await response.json()
        assert reply["status"] == status and reply.get("field") == field
    await assert_alive(client)


async def test_huge_bodies_are_413_with_and_without_content_length(make_client: MakeClient) -> None:
    client = await make_client(**LIMITS)
    huge = b"[" + b",".join([body()] * 2000) + b"]"
    response = await client.post("/decisions", data=huge, headers={"Content-Type": JSON})
    assert response.status == 413 and (await response.json())["error"] == "payload_too_large"

    async def chunks() -> Any:
        for start in range(0, len(huge), 65536):
            yield huge[start : start + 65536]

    response = await client.post("/decisions", data=chunks(), headers={"Content-Type": JSON})
    assert response.status == 413 and (await response.json())["error"] == "payload_too_large"
    await assert_alive(client)


async def test_duplicate_keys_last_one_wins_and_is_what_is_stored(client: TestClient) -> None:
    """As Python's json (CAVRA) and most parsers: the stored record shows the value that counted."""
    raw = b'{"decision":"allow","decision":"block","session_id":"s","decision_id":"dup-keys"}'
    response = await client.post("/decisions", data=raw, headers={"Content-Type": JSON})
    assert response.status == 200
    stored = await (await client.get("/decisions/dup-keys")).json()
    assert stored["decision"] == "block"
    assert (await (await client.get("/sessions/s")).json())["blocked_count"] == 1


async def test_control_characters_are_stored_verbatim(any_client: TestClient) -> None:
    text = "a\u0001b\u001fc\u007f\u2028\ufeff\U0001f600\t\n"
    sent = decision(decision_id="ctl\u0001id", session_id="ctl-session", target=text, reason=text, context={text: text})
    assert (await any_client.post("/decisions", json=sent)).status == 200
    stored = await (await any_client.get(URL("/decisions/" + quote(sent["decision_id"], safe=""), encoded=True))).json()
    assert (stored["target"], stored["reason"], stored["context"]) == (text, text, {text: text})


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"decision_id": "a\u0000b"}, "$.decision_id"),
        ({"target": "x\u0000"}, "$.target"),
        ({"evidence_refs": ["ok", "\u0000"]}, "$.evidence_refs[1]"),
        ({"context": {"k": {"inner": "\u0000"}}}, "$.context.k.inner"),
        ({"labels": {"\u0000key": 1}}, "$.labels.\u0000key"),
    ],
)
@pytest.mark.slow
async def test_nul_is_a_422_naming_the_field_on_every_store(any_client: TestClient, fields: Any, field: str) -> None:
    """PostgreSQL cannot store NUL, so no store accepts it: the same record gets the same answer everywhere."""
    response = await any_client.post("/decisions", json=decision(**fields))
    assert response.status == 422
    reply = await response.json()
    assert reply["field"] == field and "NUL" in reply["detail"]
    response = await any_client.post("/decisions", json=[decision(), decision(**fields)])
    assert response.status == 207
    assert [r["status"] for r in (await response.json())["results"]] == ["created", "invalid"]
    response = await any_client.post("/decisions", json=decision(target="\\u0000 is only text here"))
    assert response.status == 200  # an escaped backslash before u0000 is no NUL
    response = await any_client.post("/sessions", json={"session_id": "s\u0000"})
    assert response.status == 422 and (await response.json())["field"] == "$.session_id"
    await assert_alive(any_client)


SQL = [
    "'; DROP TABLE activity_decisions; --",
    '" OR 1=1 --',
    "x') UNION SELECT payload FROM activity_sessions --",
    "%' OR '%'='",
    "\\'; SELECT sqlite_version(); --",
]


async def test_sql_text_in_every_field_is_stored_and_returned_verbatim(any_client: TestClient) -> None:
    string_fields = [
        "session_id", "decision_id", "agent_id", "actor", "repository", "action_type", "target",
        "requested_operation", "policy_pack", "policy_id", "rule_id", "reason", "approver_group", "correlation_id",
        "declared_intent", "intent", "tool", "tool_name", "server", "mcp_server", "operation",
    ]  # fmt: skip
    sent = []
    for payload in SQL:
        record = decision(**{name: f"{payload} {name}" for name in string_fields})
        record["evidence_refs"] = [payload]
        record["context"] = {payload: payload}
        sent.append(record)
    response = await any_client.post("/decisions", json=sent)
    assert response.status == 200, await response.text()
    for record in sent:
        url = URL("/decisions/" + quote(record["decision_id"], safe=""), encoded=True)
        stored = await (await any_client.get(url)).json()
        for name in string_fields:
            assert stored[name] == record[name]
        assert stored["context"] == record["context"] and stored["evidence_refs"] == record["evidence_refs"]
        # Every filter matches the text exactly, as a value, never as SQL.
        for name in sorted(set(DECISION_FILTERS) & set(string_fields)):
            listing = await (await any_client.get("/decisions", params={name: record[name]})).json()
            assert [item["decision_id"] for item in listing["items"]] == [record["decision_id"]], name
        session = await (
            await any_client.get(URL("/sessions/" + quote(record["session_id"], safe=""), encoded=True))
        ).json()
        assert session["session_id"] == record["session_id"] and session["decision_count"] == 1
    assert (await (await any_client.get("/decisions")).json())["total"] == len(SQL)


async def test_sql_text_in_every_query_parameter(any_client: TestClient) -> None:
    assert (await any_client.post("/decisions", json=decision())).status == 200
    for path, filters in (("/decisions", DECISION_FILTERS), ("/sessions", SESSION_FILTERS)):
        for name in sorted(filters):
            for payload in SQL:
                response = await any_client.get(path, params={name: payload})
                reply = await response.json()
                if name in ("decision", "severity", "state"):
                    assert response.status == 400 and reply["parameter"] == name
                else:
                    assert response.status == 200 and reply["total"] == 0, (name, reply)
        for name in sorted(filters):
            response = await any_client.get(path, params={name: "a\u0000b"})
            assert response.status == 400 and (await response.json())["parameter"] == name
    for name in ("limit", "offset", "since", "until", "cursor", "count", "min_blocked"):
        path = "/sessions" if name == "min_blocked" else "/decisions"
        for payload in SQL:
            response = await any_client.get(path, params={name: payload})
            assert response.status == 400 and (await response.json())["parameter"] == name
    listing = await (await any_client.get("/decisions")).json()
    assert listing["total"] == 1  # the table is still there, with its one record


@pytest.mark.parametrize(
    ("value", "status"),
    [("99999999999999999999999", 400), ("-99999999999999999999999", 400), ("1e3", 400), (" 5", 200), ("-5", 200)],
)
@pytest.mark.slow
async def test_out_of_range_paging_integers(any_client: TestClient, value: str, status: int) -> None:
    for name in ("limit", "offset"):
        response = await any_client.get("/decisions", params={name: value})
        assert response.status == status, await response.text()
    response = await any_client.get("/sessions", params={"min_blocked": value})
    assert response.status == status


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2026-01-01"])
async def test_out_of_range_time_filters(any_client: TestClient, moment: str) -> None:
    response = await any_client.get("/decisions", params={"since": moment})
    assert response.status == 400 and (await response.json())["parameter"] == "since"


TRAVERSALS = [
    "/decisions/..%2F..%2Fetc%2Fpasswd",
    "/decisions/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/decisions/..%5C..%5Cwindows%5Cwin.ini",
    "/sessions/..%2Factivity.db",
    "/sessions/%2e%2e%2f%2e%2e%2f/decisions",
    "/decisions/%00",
    "/decisions/%ff%fe",
    "/sessions/%252e%252e%252f",
]


@pytest.mark.slow
@pytest.mark.parametrize("path", TRAVERSALS)
async def test_path_traversal_in_route_parameters_is_just_an_unknown_id(any_client: TestClient, path: str) -> None:
    response = await any_client.get(URL(path, encoded=True))
    assert response.status == 404
    reply = await response.json()
    assert reply["error"] == "not_found" and reply["detail"] in ("decision not found", "session not found")
    await assert_alive(any_client)


async def test_traversal_text_as_an_id_round_trips(any_client: TestClient) -> None:
    sent = decision(decision_id="../../etc/passwd", session_id="..\\..\\boot.ini")
    assert (await any_client.post("/decisions", json=sent)).status == 200
    stored = await (await any_client.get(URL("/decisions/..%2F..%2Fetc%2Fpasswd", encoded=True))).json()
    assert stored["decision_id"] == "../../etc/passwd"
    timeline = await (await any_client.get(URL("/sessions/..%5C..%5Cboot.ini/decisions", encoded=True))).json()
    assert [item["decision_id"] for item in timeline["items"]] == ["../../etc/passwd"]


async def test_unknown_routes_and_methods_keep_the_error_shape(client: TestClient) -> None:
    for method, path, status in [
        ("GET", "/nope", 404),
        ("PUT", "/decisions", 405),
        ("DELETE", "/decisions/x", 405),
        ("PATCH", "/sessions", 405),
    ]:
        response = await client.request(method, path)
        assert response.status == status
        assert (await response.json())["status"] == status


async def test_a_forged_cursor_holding_nul_is_a_400(any_client: TestClient) -> None:
    """Issue 18: asyncpg cannot bind NUL (it was a 500 on PostgreSQL); every store answers 400."""
    import base64

    from cavra_ingest.http.routes.reads import _fingerprint
    from cavra_ingest.store import ListQuery

    forged = json.dumps({"k": ["2026-01-01T00:00:00+00:00", "\u0000"], "f": _fingerprint(ListQuery(), "decisions")})
    token = base64.urlsafe_b64encode(forged.encode()).decode().rstrip("=")
    response = await any_client.get("/decisions", params={"cursor": token})
    assert response.status == 400 and (await response.json())["parameter"] == "cursor"
    await assert_alive(any_client)
