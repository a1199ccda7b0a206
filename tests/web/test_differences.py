"""Each item of README's "Where cavra-ingest deliberately differs from CAVRA", as behaviour that could regress."""

from __future__ import annotations

from tests.conftest import decision, drain


async def test_empty_filter_values_mean_no_filter(any_client):
    assert (await any_client.post("/decisions", json=decision(agent_id="a1"))).status == 200
    body = await (await any_client.get("/decisions", params={"agent_id": "", "severity": ""})).json()
    assert body["total"] == 1


async def test_unknown_query_parameters_are_400s(any_client):
    response = await any_client.get("/decisions", params={"agnet_id": "x"})
    assert response.status == 400
    assert (await response.json())["parameter"] == "agnet_id"


async def test_repeated_filter_values_are_or(any_client):
    for agent in ("a1", "a2", "a3"):
        assert (await any_client.post("/decisions", json=decision(agent_id=agent))).status == 200
    body = await (await any_client.get("/decisions?agent_id=a1&agent_id=a3")).json()
    assert sorted(item["agent_id"] for item in body["items"]) == ["a1", "a3"]


async def test_post_sessions_answers_200_with_the_summary_and_refuses_unknown_fields(any_client):
    created = await any_client.post("/sessions", json={"session_id": "s-new", "state": "completed"})
    assert created.status == 200
    summary = await created.json()
    # Counts on a new session are zero, whatever the client says: they come from stored decisions.
    counted = await any_client.post("/sessions", json={"session_id": "s-new", "decision_count": 9, "blocked_count": 3})
    assert counted.status == 200
    assert (await counted.json())["decision_count"] == summary["decision_count"] == 0
    unknown = await any_client.post("/sessions", json={"session_id": "s-new", "colour": "blue"})
    assert unknown.status == 422
    assert "colour" in (await unknown.json())["detail"]


async def test_timestamps_are_normalised_on_write(any_client):
    response = await any_client.post("/decisions", json=decision(timestamp="2026-04-01T12:00:00.5+02:00"))
    assert (await response.json())["timestamp"] == "2026-04-01T10:00:00.500000+00:00"


async def test_sessions_carry_extra_keys(any_client):
    body = decision(session_id="s-x", tenant_id="tenant-1", workspace_id="ws-1")
    assert (await any_client.post("/decisions", json=body)).status == 200
    assert (await any_client.post("/sessions", json={"session_id": "s-x", "metadata": {"k": "v"}})).status == 200
    await drain(any_client)
    summary = await (await any_client.get("/sessions/s-x")).json()
    assert summary["last_decision_id"] == body["decision_id"]
    assert summary["metadata"] == {"k": "v"}
    assert (summary["tenant_id"], summary["workspace_id"]) == ("tenant-1", "ws-1")
    listing = await (await any_client.get("/sessions")).json()
    assert "next_cursor" in listing


async def test_error_bodies_carry_status_error_and_field(any_client):
    response = await any_client.post("/decisions", json=decision(severity="loud"))
    assert response.status == 422
    error = await response.json()
    assert set(error) >= {"detail", "status", "error", "field"}
    assert (error["status"], error["error"], error["field"]) == (422, "validation_error", "$.severity")


async def test_ingest_refuses_severities_outside_the_enum_that_reads_find(any_client):
    # CAVRA stores any severity string; cavra-ingest refuses one on write and finds stored ones on read.
    assert (await any_client.post("/decisions", json=decision(severity="informational"))).status == 422
    assert (await any_client.get("/decisions", params={"severity": "informational"})).status == 400


async def test_ties_break_by_decision_id_ascending_on_every_store(any_client):
    same = "2026-04-01T10:00:00Z"
    for ident in ("dec-b", "dec-c", "dec-a"):
        assert (await any_client.post("/decisions", json=decision(decision_id=ident, timestamp=same))).status == 200
    body = await (await any_client.get("/decisions")).json()
    assert [item["decision_id"] for item in body["items"]] == ["dec-a", "dec-b", "dec-c"]
