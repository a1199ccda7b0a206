"""Batch planning alone: new, duplicate and conflicting decisions, and the summaries they fold into."""

from __future__ import annotations

from typing import Any

import msgspec

from cavra_ingest.core.models import Accepted, DecisionIn, SessionIn, normalize
from cavra_ingest.core.planning import decision_ids, plan_batch, same_content, session_ids
from cavra_ingest.core.summary import recount
from tests.conftest import decision


def accepted(**fields: Any):
    body = decision(**fields)
    return normalize(msgspec.convert(body, DecisionIn), [])


def test_new_decisions_are_inserted_and_counted_once_per_session() -> None:
    items = [accepted(session_id="s1", decision="block"), accepted(session_id="s1"), accepted(session_id="s2")]
    plan = plan_batch(items, {}, {})
    assert [r.status for r in plan.results] == ["created"] * 3
    assert [i.record.decision_id for i in plan.inserts] == decision_ids(items)
    assert plan.sessions["s1"].decision_count == 2 and plan.sessions["s1"].blocked_count == 1
    assert plan.sessions["s2"].decision_count == 1


def resent(item: Accepted) -> Accepted:
    """The stored record sent again later: the server stamps a new `received_at` on it."""
    fields = msgspec.json.decode(item.payload)
    fields.pop("received_at")
    again = normalize(msgspec.convert(fields, DecisionIn), [])
    assert again.record.received_at is not None
    again.record.received_at = again.record.received_at + "-later"
    again.payload = msgspec.json.encode(again.record)
    return again


def test_a_replay_is_a_duplicate_and_other_content_a_conflict() -> None:
    first = accepted(decision_id="d-1", session_id="s1")
    stored = {"d-1": first.payload}
    replay = resent(first)
    changed = accepted(decision_id="d-1", session_id="s1", decision="block")
    plan = plan_batch([replay, changed], stored, {})
    assert [r.status for r in plan.results] == ["duplicate", "conflict"]
    assert plan.results[0].body == stored["d-1"] and plan.results[1].body == stored["d-1"]
    assert plan.inserts == [] and plan.sessions == {}


def test_the_same_id_twice_in_one_batch_is_stored_once() -> None:
    one = accepted(decision_id="d-2")
    again = resent(one)
    plan = plan_batch([one, again], {}, {})
    assert [r.status for r in plan.results] == ["created", "duplicate"]
    assert len(plan.inserts) == 1 and plan.sessions["sess-1"].decision_count == 1


def test_a_replay_without_server_filled_fields_is_a_duplicate() -> None:
    sent = {"decision": "allow", "session_id": "s1", "decision_id": "d-3"}
    first = normalize(msgspec.convert(sent, DecisionIn), [])
    later = normalize(msgspec.convert(sent, DecisionIn), [])
    assert first.record.correlation_id != later.record.correlation_id
    assert same_content(first.payload, later)


def test_a_server_made_id_that_collides_is_remade() -> None:
    item = normalize(msgspec.convert({"decision": "allow", "session_id": "s1"}, DecisionIn), [])
    taken = item.record.decision_id
    plan = plan_batch([item], {taken: b'{"decision_id":"other"}'}, {})
    assert plan.results[0].status == "created" and item.record.decision_id != taken
    assert msgspec.json.decode(item.payload)["decision_id"] == item.record.decision_id


def test_a_session_update_counts_the_decisions_queued_before_it() -> None:
    items = [accepted(session_id="s1", decision="require_approval"), SessionIn(session_id="s1", state="completed")]
    plan = plan_batch(items, {}, {})
    reply = msgspec.json.decode(plan.results[1].body)
    assert plan.results[1].status == "updated"
    assert reply["decision_count"] == 1 and reply["approval_required_count"] == 1 and reply["state"] == "completed"
    assert session_ids(items) == ["s1"]


def test_incremental_summaries_equal_a_recount_in_any_batching() -> None:
    items = [accepted(session_id="s1", decision=kind) for kind in ("allow", "block", "warn", "block")]
    first = plan_batch(items[2:], {}, {})
    second = plan_batch(items[:2], {}, first.sessions)
    expected = recount("s1", [item.record for item in items])
    got = second.sessions["s1"]
    assert (got.decision_count, got.blocked_count, got.started_at, got.updated_at) == (
        expected.decision_count,
        expected.blocked_count,
        expected.started_at,
        expected.updated_at,
    )
