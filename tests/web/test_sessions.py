"""Session summaries (SPEC §2) and POST /sessions."""

from __future__ import annotations

import random

from tests.conftest import decision


async def test_summary_follows_out_of_order_decisions(any_client):
    late = decision(session_id="s-ooo", timestamp="2026-05-01T12:00:00Z", agent_id="agent-late", decision="block")
    early = decision(session_id="s-ooo", timestamp="2026-05-01T08:00:00Z", agent_id="agent-early")
    middle = decision(session_id="s-ooo", timestamp="2026-05-01T10:00:00Z", decision="require_approval")
    for sent in (middle, late, early):
        assert (await any_client.post("/decisions", json=sent)).status == 200
    session = await (await any_client.get("/sessions/s-ooo")).json()
    assert session["started_at"] == "2026-05-01T08:00:00.000000+00:00"
    assert session["updated_at"] == "2026-05-01T12:00:00.000000+00:00"
    assert session["agent_id"] == "agent-late"
    assert (session["decision_count"], session["blocked_count"], session["approval_required_count"]) == (3, 1, 1)
    assert session["schema_version"] == "cavra.session.v1"


async def test_latest_fields_come_from_the_latest_decision(client):
    older = decision(session_id="s-l", timestamp="2026-01-01T00:00:00Z", repository="r-old", policy_pack="p-old")
    newer = decision(session_id="s-l", timestamp="2026-01-02T00:00:00Z", repository="r-new", policy_pack="p-new")
    await client.post("/decisions", json=[newer, older])
    session = await (await client.get("/sessions/s-l")).json()
    assert (session["repository"], session["policy_pack"]) == ("r-new", "p-new")


async def test_evidence_refs_are_a_deduplicated_union(any_client):
    await any_client.post("/decisions", json=decision(session_id="s-ev", evidence_refs=["b", "a"]))
    await any_client.post("/decisions", json=decision(session_id="s-ev", evidence_refs=["a", "c"]))
    session = await (await any_client.get("/sessions/s-ev")).json()
    assert session["evidence_refs"] == ["a", "b", "c"]


async def test_tenant_and_workspace_come_from_the_decisions(client):
    await client.post("/decisions", json=decision(session_id="s-t", tenant_id="tenant-1", workspace_id="ws-1"))
    session = await (await client.get("/sessions/s-t")).json()
    assert (session["tenant_id"], session["workspace_id"]) == ("tenant-1", "ws-1")


async def test_state_is_set_by_post_and_kept_across_decisions(any_client):
    await any_client.post("/decisions", json=decision(session_id="s-st"))
    response = await any_client.post("/sessions", json={"session_id": "s-st", "state": "completed"})
    assert response.status == 200
    assert (await response.json())["state"] == "completed"
    await any_client.post("/decisions", json=decision(session_id="s-st"))
    session = await (await any_client.get("/sessions/s-st")).json()
    assert (session["state"], session["decision_count"]) == ("completed", 2)


async def test_counts_and_descriptive_fields_never_come_from_the_client(any_client):
    """Once a session has decisions, its repository (and other descriptive fields) are theirs: a client
    cannot move it out of the repository listing its decisions name."""
    await any_client.post("/decisions", json=decision(session_id="s-c", decision="block"))
    response = await any_client.post(
        "/sessions", json={"session_id": "s-c", "decision_count": 99, "blocked_count": 42, "repository": "r2"}
    )
    body = await response.json()
    assert (body["decision_count"], body["blocked_count"], body["repository"]) == (1, 1, "acme/api")
    listed = await (await any_client.get("/sessions", params={"repository": "acme/api"})).json()
    assert [s["session_id"] for s in listed["items"]] == ["s-c"]


async def test_session_created_before_its_decisions(any_client):
    created = await any_client.post("/sessions", json={"session_id": "s-new", "state": "active", "agent_id": "a1"})
    assert (created.status, (await created.json())["decision_count"]) == (200, 0)
    await any_client.post("/decisions", json=decision(session_id="s-new", timestamp="2020-01-01T00:00:00Z"))
    session = await (await any_client.get("/sessions/s-new")).json()
    assert session["started_at"] == session["updated_at"] == "2020-01-01T00:00:00.000000+00:00"
    assert session["decision_count"] == 1


async def test_invalid_state_is_422(any_client):
    response = await any_client.post("/sessions", json={"session_id": "s", "state": "paused"})
    assert response.status == 422
    assert (await response.json())["field"] == "$.state"


async def test_unknown_session_and_decision_are_404_in_spec_shape(any_client):
    missing_session = await any_client.get("/sessions/nope")
    assert missing_session.status == 404
    assert (await missing_session.json())["detail"] == "session not found"
    missing_decision = await any_client.get("/decisions/nope")
    assert (await missing_decision.json())["detail"] == "decision not found"


async def test_summary_equals_a_recount_after_shuffled_batches(any_client):
    rng = random.Random(7)
    outcomes = ["allow", "block", "require_approval", "warn"]
    sent = [
        decision(
            session_id=f"s-r{i % 3}",
            decision=rng.choice(outcomes),
            timestamp=f"2026-02-0{1 + i % 9}T00:00:{i % 60:02d}Z",
        )
        for i in range(60)
    ]
    rng.shuffle(sent)
    for start in range(0, len(sent), 7):
        assert (await any_client.post("/decisions", json=sent[start : start + 7])).status == 200
    for n in range(3):
        mine = [d for d in sent if d["session_id"] == f"s-r{n}"]
        session = await (await any_client.get(f"/sessions/s-r{n}")).json()
        assert session["decision_count"] == len(mine)
        assert session["blocked_count"] == sum(d["decision"] == "block" for d in mine)
        assert session["approval_required_count"] == sum(d["decision"] == "require_approval" for d in mine)
        stamps = sorted(d["timestamp"] for d in mine)
        assert session["started_at"][:19] == stamps[0][:19]
        assert session["updated_at"][:19] == stamps[-1][:19]
