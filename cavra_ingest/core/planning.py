"""Batch planning, the heart of idempotency: which decisions are new, duplicate or conflicting, and the
summaries they fold into. Every store runs it inside its write transaction on what it read there."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import msgspec

from cavra_ingest.core.models import ENCODER, Accepted, SessionIn, SessionRecord, comparable, new_id, now_text
from cavra_ingest.core.sink import WriteItem, WriteResult
from cavra_ingest.core.summary import add_decisions, apply_update, empty_session, refused_transition


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


def quota_usage(inserts: list[Accepted]) -> list[tuple[str, str, int]]:
    """Count the created records per (token, day) with a quota, in key order: PostgreSQL writers lock the usage
    rows in one order, so two of them never deadlock on them."""
    counted = Counter((item.quota.token_id, item.quota.day) for item in inserts if item.quota is not None)
    return [(token_id, day, records) for (token_id, day), records in sorted(counted.items())]


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


class _Scope(msgspec.Struct):
    tenant_id: str | None = None


_SCOPE = msgspec.json.Decoder(_Scope)
# Refusals say nothing of the other tenant's record: not its content, not whose it is.
SESSION_TAKEN = b"session_id belongs to another tenant"
DECISION_TAKEN = b"decision_id is already taken"


class Owners:
    """Which tenant owns each session: the tenant of its first decision (or creating update), for good."""

    def __init__(self, stored_sessions: dict[str, SessionRecord]) -> None:
        self.stored = stored_sessions
        self.claimed: dict[str, str | None] = {}

    def owner(self, session_id: str) -> tuple[bool, str | None]:
        if session_id in self.claimed:
            return True, self.claimed[session_id]
        session = self.stored.get(session_id)
        if session is not None and (session.tenant_id is not None or session.decision_count > 0):
            self.claimed[session_id] = session.tenant_id
            return True, session.tenant_id
        return False, None

    def admits(self, session_id: str, writer_tenant: str | None, tenant: str | None) -> bool:
        """Say whether a write may touch the session; claim it for the writer when unclaimed."""
        claimed, owner = self.owner(session_id)
        if writer_tenant is not None and claimed and owner != writer_tenant:
            return False
        if owner is not None and tenant is not None and tenant != owner:
            return False  # not even a platform administrator moves a session to another tenant
        if not claimed or (owner is None and tenant is not None):
            # Unbound writers (platform administrators) may tag an untagged session, as the summary does.
            self.claimed[session_id] = tenant
        return True


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
    owners = Owners(stored_sessions)

    def session_for(session_id: str) -> SessionRecord:
        session = plan.sessions.get(session_id) or stored_sessions.get(session_id)
        if session is None:
            session = empty_session(session_id, now)
        plan.sessions[session_id] = session
        return session

    for item in items:
        if isinstance(item, SessionIn):
            if not owners.admits(item.session_id, getattr(item, "writer_tenant", None), item.tenant_id):
                plan.results.append(WriteResult("forbidden", SESSION_TAKEN))
                continue
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
        writer = item.writer_tenant
        if writer is not None and stored is not None and _SCOPE.decode(stored).tenant_id != writer:
            plan.results.append(WriteResult("forbidden", DECISION_TAKEN))
        elif stored is None and not owners.admits(item.record.session_id, writer, item.record.tenant_id):
            plan.results.append(WriteResult("forbidden", SESSION_TAKEN))
        elif stored is None:
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
