"""POST /decisions: SPEC §1 validation, defaults, idempotency, batches and error statuses."""

from __future__ import annotations

import json
import re

from tests.conftest import decision


async def test_defaults_fill_every_unspecified_field(any_client):
    response = await any_client.post("/decisions", json={"decision": "warn", "session_id": "s-defaults"})
    assert response.status == 200
    stored = await response.json()
    assert re.fullmatch(r"dec_[0-9a-f]{12}", stored["decision_id"])
    assert re.fullmatch(r"corr_[0-9a-f]{12}", stored["correlation_id"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00", stored["timestamp"])
    expected = {
        "schema_version": "cavra.decision.v1",
        "agent_id": "unknown-agent",
        "actor": "ai-agent",
        "repository": "local",
        "action_type": "unknown",
        "target": "",
        "requested_operation": "",
        "policy_pack": "cavra-ai-agent-baseline",
        "policy_id": "cavra-ai-agent-baseline",
        "rule_id": "runtime.default",
        "severity": "low",
        "reason": None,
        "approver_group": None,
        "evidence_refs": [],
    }
    assert {key: stored[key] for key in expected} == expected
    assert await (await any_client.get(f"/decisions/{stored['decision_id']}")).json() == stored


async def test_policy_id_defaults_to_the_policy_pack(client):
    stored = await (await client.post("/decisions", json=decision(policy_pack="pack-x"))).json()
    assert stored["policy_id"] == "pack-x"


async def test_timestamp_is_normalised_to_utc_microseconds(any_client):
    sent = decision(timestamp="2026-03-01T12:30:00.5+02:00")
    stored = await (await any_client.post("/decisions", json=sent)).json()
    assert stored["timestamp"] == "2026-03-01T10:30:00.500000+00:00"


async def test_timestamp_without_offset_is_422_naming_the_field(any_client):
    response = await any_client.post("/decisions", json=decision(timestamp="2026-03-01T12:30:00"))
    assert response.status == 422
    body = await response.json()
    assert body["field"] == "$.timestamp"
    assert "timezone" in body["detail"]


async def test_single_evidence_ref_becomes_a_list(client):
    stored = await (await client.post("/decisions", json=decision(evidence_refs="ev://1"))).json()
    assert stored["evidence_refs"] == ["ev://1"]


async def test_wrong_type_and_bad_enum_name_the_field(any_client):
    wrong_type = await any_client.post("/decisions", json=decision(severity=3))
    assert wrong_type.status == 422
    assert (await wrong_type.json())["field"] == "$.severity"
    bad_enum = await any_client.post("/decisions", json=decision(decision="maybe"))
    body = await bad_enum.json()
    assert (bad_enum.status, body["field"]) == (422, "$.decision")
    assert "maybe" in body["detail"]


async def test_missing_required_fields_are_422(client):
    response = await client.post("/decisions", json={"session_id": "s"})
    assert response.status == 422
    assert "decision" in (await response.json())["detail"]
    response = await client.post("/decisions", json={"decision": "allow", "session_id": ""})
    assert (response.status, (await response.json())["field"]) == (422, "$.session_id")


async def test_scope_ids_must_match_their_pattern(client):
    response = await client.post("/decisions", json=decision(tenant_id="a b"))
    assert (response.status, (await response.json())["field"]) == (422, "$.tenant_id")
    stored = await (await client.post("/decisions", json=decision(tenant_id="acme:prod"))).json()
    assert stored["tenant_id"] == "acme:prod"


async def test_oversized_field_is_a_422_naming_it(client):
    response = await client.post("/decisions", json=decision(agent_id="a" * 257))
    assert (response.status, (await response.json())["field"]) == (422, "$.agent_id")


async def test_unknown_fields_are_reported_and_not_stored(any_client):
    sent = decision(surprise=1, another="x")
    response = await any_client.post("/decisions", json=sent)
    assert response.status == 200
    assert (await response.json())["ignored_fields"] == ["another", "surprise"]
    stored = await (await any_client.get(f"/decisions/{sent['decision_id']}")).json()
    assert "surprise" not in stored and "ignored_fields" not in stored


async def test_optional_intent_fields_kept_only_when_non_empty(client):
    sent = decision(declared_intent="refactor", tool="", context={"cwd": "/repo"}, labels={"team": "core"})
    stored = await (await client.post("/decisions", json=sent)).json()
    assert stored["declared_intent"] == "refactor"
    assert "tool" not in stored
    assert (stored["context"], stored["labels"]) == ({"cwd": "/repo"}, {"team": "core"})


async def test_replay_is_a_duplicate_stored_and_counted_once(any_client):
    sent = decision(decision="block")
    first = await any_client.post("/decisions", json=sent)
    replay = await any_client.post("/decisions", json=sent)
    assert (first.status, replay.status) == (200, 200)
    assert (await replay.json())["duplicate"] is True
    session = await (await any_client.get("/sessions/sess-1")).json()
    assert (session["decision_count"], session["blocked_count"]) == (1, 1)


async def test_replay_without_timestamp_is_still_a_duplicate(client):
    sent = decision()
    del sent["timestamp"]
    first = await (await client.post("/decisions", json=sent)).json()
    replay = await client.post("/decisions", json=sent)
    assert replay.status == 200
    assert (await replay.json())["timestamp"] == first["timestamp"]


async def test_same_id_different_content_is_409_and_changes_nothing(any_client):
    sent = decision(decision="allow")
    await any_client.post("/decisions", json=sent)
    response = await any_client.post("/decisions", json={**sent, "decision": "block"})
    assert response.status == 409
    assert (await response.json())["decision_id"] == sent["decision_id"]
    stored = await (await any_client.get(f"/decisions/{sent['decision_id']}")).json()
    assert stored["decision"] == "allow"
    session = await (await any_client.get("/sessions/sess-1")).json()
    assert (session["decision_count"], session["blocked_count"]) == (1, 0)


async def test_mixed_batch_stores_valid_records_and_reports_each(any_client):
    existing = decision(decision_id="dec-existing")
    await any_client.post("/decisions", json=existing)
    batch = [
        decision(decision_id="dec-new-1"),
        decision(decision="nope"),
        existing,
        {**existing, "decision": "block"},
        decision(decision_id="dec-new-2", extra_field=True),
    ]
    response = await any_client.post("/decisions", json=batch)
    assert response.status == 207
    body = await response.json()
    statuses = [(r["index"], r["status"], r["error"] and r["error"]["status"]) for r in body["results"]]
    assert statuses == [
        (0, "created", None),
        (1, "invalid", 422),
        (2, "duplicate", None),
        (3, "conflict", 409),
        (4, "created", None),
    ]
    assert body["results"][4]["ignored_fields"] == ["extra_field"]
    assert (body["created"], body["duplicates"], body["failed"]) == (2, 1, 2)
    listed = await (await any_client.get("/decisions", params={"session_id": "sess-1"})).json()
    assert sorted(item["decision_id"] for item in listed["items"]) == ["dec-existing", "dec-new-1", "dec-new-2"]


async def test_all_valid_batch_is_200(client):
    response = await client.post("/decisions", json=[decision() for _ in range(3)])
    assert response.status == 200
    assert (await response.json())["created"] == 3


async def test_batch_where_every_record_fails_alike_takes_their_status(client):
    response = await client.post("/decisions", json=[{"decision": "x"}, {"session_id": 1}])
    assert response.status == 422
    assert (await response.json())["created"] == 0


async def test_duplicate_inside_one_batch_is_stored_once(client):
    sent = decision()
    body = await (await client.post("/decisions", json=[sent, sent])).json()
    assert [r["status"] for r in body["results"]] == ["created", "duplicate"]
    session = await (await client.get("/sessions/sess-1")).json()
    assert session["decision_count"] == 1


async def test_ndjson_body_with_a_malformed_line(any_client):
    lines = [json.dumps(decision()), "{not json", "", json.dumps(decision())]
    response = await any_client.post(
        "/decisions", data="\n".join(lines).encode(), headers={"Content-Type": "application/x-ndjson"}
    )
    assert response.status == 207
    results = (await response.json())["results"]
    assert [(r["index"], r["status"]) for r in results] == [(0, "created"), (1, "invalid"), (2, "created")]
    assert results[1]["error"]["status"] == 400


async def test_malformed_json_is_400(client):
    for body in (b"{", b'{"decision": "allow",', b"[1, 2", b"\xff\xfe"):
        response = await client.post("/decisions", data=body, headers={"Content-Type": "application/json"})
        assert response.status in (400, 422), body
        assert (await response.json())["status"] == response.status
    truncated = await client.post(
        "/decisions", data=b'[{"decision": "allow"', headers={"Content-Type": "application/json"}
    )
    assert truncated.status == 400


async def test_empty_body_and_empty_batch_are_400(client):
    for body in (b"", b"   ", b"[]"):
        response = await client.post("/decisions", data=body, headers={"Content-Type": "application/json"})
        assert response.status == 400, body


async def test_other_content_type_is_415(client):
    response = await client.post("/decisions", data=b"decision=allow", headers={"Content-Type": "text/plain"})
    assert response.status == 415
    assert "Content-Type" in (await response.json())["detail"]


async def test_body_over_the_limit_is_413(make_client):
    client = await make_client(max_body_bytes=2048)
    big = decision(target="x" * 4000)
    response = await client.post("/decisions", json=big)
    assert response.status == 413
    assert (await response.json())["error"] == "payload_too_large"
    assert (await client.get("/healthz")).status == 200


async def test_batch_over_the_record_limit_is_413(make_client):
    client = await make_client(request_max_records=5)
    response = await client.post("/decisions", json=[decision() for _ in range(6)])
    assert response.status == 413
    listed = await (await client.get("/decisions")).json()
    assert listed["total"] == 0


async def test_record_over_the_size_limit_is_a_per_record_422(make_client):
    client = await make_client(max_record_bytes=1024)
    response = await client.post("/decisions", json=[decision(), decision(reason="r" * 2000)])
    assert response.status == 207
    results = (await response.json())["results"]
    assert results[1]["error"]["status"] == 422
    assert "1024" in results[1]["error"]["detail"]
