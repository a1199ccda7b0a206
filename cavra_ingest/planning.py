"""Batch planning, the heart of idempotency: which decisions are new, duplicate or conflicting, and the
summaries they fold into. Every store runs it inside its write transaction on what it read there."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from .models import ENCODER, Accepted, SessionIn, SessionRecord, comparable, new_id, now_text
from .store.base import WriteItem, WriteResult
from .summary import add_decisions, apply_update, empty_session, refused_transition


@dataclass
class Plan:
    """The writes one batch resolves to, computed before anything is written."""

    inserts: list[Accepted] = field(default_factory=list)
    sessions: dict[str, SessionRecord] = field(default_factory=dict)
    results: list[WriteResult] = field(default_factory=list)


def decision_ids(items: list[WriteItem]) -> list[str]:
    """Return the decision ids a batch touches, for one existence look-up."""
    return [item.record.decision_id for item in items if isinstance(item, Accepted)]


def session_ids(items: list[WriteItem]) -> list[str]:
    """Return the session ids a batch touches, for one summary look-up."""
    return list({item.record.session_id if isinstance(item, Accepted) else item.session_id: None for item in items})


def same_content(stored: bytes, item: Accepted) -> bool:
    """Say whether a stored record is what the item would store, ignoring what the server filled in."""
    stored_fields: dict[str, Any] = msgspec.json.decode(stored)
    incoming: dict[str, Any] = msgspec.json.decode(item.payload)
    return comparable(stored_fields, item.generated) == comparable(incoming, item.generated)


def _fresh_id(item: Accepted, taken: dict[str, bytes]) -> None:
    # A server-made id collided with a stored one: it names nothing the client knows, so remake it.
    while item.record.decision_id in taken:
        item.record.decision_id = new_id("dec_")
    item.payload = ENCODER.encode(item.record)


def plan_batch(
    items: list[WriteItem],
    stored_decisions: dict[str, bytes],
    stored_sessions: dict[str, SessionRecord],
) -> Plan:
    """Classify each decision (new, duplicate, conflict) and fold new ones into summaries."""
    plan = Plan()
    seen = dict(stored_decisions)
    now = now_text()
    new_by_session: dict[str, list[Accepted]] = {}

    def session_for(session_id: str) -> SessionRecord:
        session = plan.sessions.get(session_id) or stored_sessions.get(session_id)
        if session is None:
            session = empty_session(session_id, now)
        plan.sessions[session_id] = session
        return session

    for item in items:
        if isinstance(item, SessionIn):
            # Decisions queued before this update are counted first, so the reply is current.
            pending = new_by_session.pop(item.session_id, None)
            session = session_for(item.session_id)
            if pending:
                add_decisions(session, [p.record for p in pending])
            refusal = refused_transition(session, item)
            if refusal is not None:
                plan.results.append(WriteResult("conflict", refusal.encode()))
                continue
            apply_update(session, item, now)
            plan.results.append(WriteResult("updated", ENCODER.encode(session)))
            continue
        if "decision_id" in item.generated and item.record.decision_id in seen:
            _fresh_id(item, seen)
        stored = seen.get(item.record.decision_id)
        if stored is None:
            seen[item.record.decision_id] = item.payload
            plan.inserts.append(item)
            new_by_session.setdefault(item.record.session_id, []).append(item)
            plan.results.append(WriteResult("created", item.payload))
        elif same_content(stored, item):
            plan.results.append(WriteResult("duplicate", stored))
        else:
            plan.results.append(WriteResult("conflict", stored))
    for session_id, pending in new_by_session.items():
        add_decisions(session_for(session_id), [p.record for p in pending])
    return plan
