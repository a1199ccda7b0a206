"""Session summaries (SPEC §2) folded from decisions, the same for every store."""

from __future__ import annotations

from collections.abc import Iterable

from cavra_ingest.core.models import (
    DECISION_DEFAULTS,
    SESSION_SCHEMA,
    DecisionRecord,
    SessionIn,
    SessionRecord,
    StateChange,
)

# The session lifecycle: which state may follow which. Staying in the same state is always allowed (a
# retried request); `completed` and `failed` only move on to `archived`, and `archived` is final.
TRANSITIONS: dict[str, frozenset[str]] = {
    "active": frozenset({"completed", "failed", "archived"}),
    "completed": frozenset({"archived"}),
    "failed": frozenset({"archived"}),
    "archived": frozenset(),
}
DESCRIPTIVE_FIELDS = ("agent_id", "actor", "repository", "policy_pack", "tenant_id", "workspace_id")


def empty_session(session_id: str, now: str) -> SessionRecord:
    """Return a summary for a session that has no decisions yet."""
    return SessionRecord(
        schema_version=SESSION_SCHEMA,
        session_id=session_id,
        agent_id=DECISION_DEFAULTS["agent_id"],
        actor=DECISION_DEFAULTS["actor"],
        repository=DECISION_DEFAULTS["repository"],
        policy_pack=DECISION_DEFAULTS["policy_pack"],
        state="active",
        started_at=now,
        updated_at=now,
        decision_count=0,
        blocked_count=0,
        approval_required_count=0,
        evidence_refs=[],
    )


def add_decisions(session: SessionRecord, decisions: Iterable[DecisionRecord]) -> None:
    """Fold newly stored decisions into a summary, whatever order they arrive in."""
    new_refs: set[str] = set()
    for decision in decisions:
        first = session.decision_count == 0
        session.decision_count += 1
        if decision.decision == "block":
            session.blocked_count += 1
        elif decision.decision == "require_approval":
            session.approval_required_count += 1
        if first or decision.timestamp < session.started_at:
            session.started_at = decision.timestamp
        latest = first or (decision.timestamp, decision.decision_id) > (
            session.updated_at,
            session.last_decision_id or "",
        )
        if latest:
            session.updated_at = decision.timestamp
            session.last_decision_id = decision.decision_id
            session.agent_id = decision.agent_id
            session.actor = decision.actor
            session.repository = decision.repository
            session.policy_pack = decision.policy_pack
        if decision.tenant_id and (latest or session.tenant_id is None):
            session.tenant_id = decision.tenant_id
        if decision.workspace_id and (latest or session.workspace_id is None):
            session.workspace_id = decision.workspace_id
        new_refs.update(decision.evidence_refs)
    # Sorted so the union is the same whatever order the decisions were written in.
    if not new_refs.issubset(session.evidence_refs):
        session.evidence_refs = sorted(new_refs.union(session.evidence_refs))


def refused_transition(session: SessionRecord, update: SessionIn) -> str | None:
    """Say why the update's state may not follow the session's, or None when it may."""
    if update.state is None or update.state == session.state:
        return None
    if update.state in TRANSITIONS.get(session.state, frozenset()):
        return None
    allowed = ", ".join(sorted(TRANSITIONS.get(session.state, ()))) or "none"
    return (
        f"session state may not change from {session.state} to {update.state} (allowed from {session.state}: {allowed})"
    )


def apply_update(session: SessionRecord, update: SessionIn, now: str) -> None:
    """Apply an allowed state change (recorded) and metadata; descriptive fields come from decisions once
    there are any, so a session cannot be moved out of the repository its decisions name."""
    if update.state is not None and update.state != session.state:
        change = StateChange(at=now, by=update.changed_by or "unknown", from_state=session.state, to_state=update.state)
        session.state_history = [*(session.state_history or []), change]
        session.state = update.state
    if session.decision_count == 0:
        for name in DESCRIPTIVE_FIELDS:
            value = getattr(update, name)
            if value:
                setattr(session, name, value)
    if update.metadata is not None:
        session.metadata = update.metadata


def recount(session_id: str, decisions: list[DecisionRecord], state: str = "active") -> SessionRecord:
    """Compute a summary from scratch, the reference the incremental fold must equal."""
    ordered = sorted(decisions, key=lambda d: (d.timestamp, d.decision_id))
    session = empty_session(session_id, ordered[0].timestamp if ordered else "")
    add_decisions(session, ordered)
    session.state = state
    return session
