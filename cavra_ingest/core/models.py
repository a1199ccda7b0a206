"""Decision and session records (SPEC §1, §2) and their validation."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

DECISION_SCHEMA = "cavra.decision.v1"
SESSION_SCHEMA = "cavra.session.v1"

OUTCOMES = ("allow", "block", "require_approval", "warn", "audit_only", "allow_with_attestation")
SEVERITIES = ("low", "medium", "high", "critical")
SESSION_STATES = ("active", "completed", "failed", "archived")

Outcome = Literal["allow", "block", "require_approval", "warn", "audit_only", "allow_with_attestation"]
Severity = Literal["low", "medium", "high", "critical"]
SessionState = Literal["active", "completed", "failed", "archived"]
Id = Annotated[str, Meta(min_length=1, max_length=256)]
Name = Annotated[str, Meta(max_length=256)]
ScopeId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.:-]{3,128}$")]
ActionType = Annotated[str, Meta(max_length=128)]
Text = Annotated[str, Meta(max_length=8192)]
EvidenceRef = Annotated[str, Meta(max_length=2048)]
EvidenceRefs = Annotated[list[EvidenceRef], Meta(max_length=256)]
Timestamp = Annotated[datetime, Meta(tz=True)]
JsonObject = dict[str, Any]

# SPEC §1's defaults for fields a client (or CAVRA, with a null) leaves out; policy_id defaults to policy_pack.
DECISION_DEFAULTS: dict[str, str] = {
    "agent_id": "unknown-agent",
    "actor": "ai-agent",
    "repository": "local",
    "action_type": "unknown",
    "target": "",
    "requested_operation": "",
    "policy_pack": "cavra-ai-agent-baseline",
    "rule_id": "runtime.default",
    "severity": "low",
}

# Optional descriptive strings that are kept only when non-empty (SPEC §1).
INTENT_FIELDS = (
    "declared_intent",
    "intent",
    "requested_intent",
    "user_intent",
    "task_intent",
    "business_intent",
    "tool",
    "tool_name",
    "server",
    "mcp_server",
    "tool_vendor",
    "tool_capability",
    "operation",
)


class DecisionIn(Struct, forbid_unknown_fields=True):
    """A decision as a client sends it; None means "use the default"."""

    decision: Outcome
    session_id: Id
    decision_id: Id | None = None
    timestamp: Timestamp | None = None
    agent_id: Name | None = None
    actor: Name | None = None
    repository: Name | None = None
    action_type: ActionType | None = None
    target: Text | None = None
    requested_operation: Text | None = None
    policy_pack: Name | None = None
    policy_id: Name | None = None
    rule_id: Name | None = None
    severity: Severity | None = None
    reason: Text | None = None
    approver_group: Name | None = None
    evidence_refs: EvidenceRefs | EvidenceRef | None = None
    correlation_id: Id | None = None
    tenant_id: ScopeId | None = None
    workspace_id: ScopeId | None = None
    declared_intent: Text | None = None
    intent: Text | None = None
    requested_intent: Text | None = None
    user_intent: Text | None = None
    task_intent: Text | None = None
    business_intent: Text | None = None
    tool: Name | None = None
    tool_name: Name | None = None
    server: Name | None = None
    mcp_server: Name | None = None
    tool_vendor: Name | None = None
    tool_capability: Name | None = None
    operation: Name | None = None
    context: JsonObject | None = None
    metadata: JsonObject | None = None
    labels: JsonObject | None = None
    schema_version: Literal["cavra.decision.v1"] | None = None


KNOWN_DECISION_FIELDS = frozenset(DecisionIn.__struct_fields__)


class DecisionRecord(Struct, omit_defaults=True):
    """A stored, normalised decision; optional fields are omitted when unset."""

    schema_version: str
    decision_id: str
    session_id: str
    timestamp: str
    decision: str
    agent_id: str
    actor: str
    repository: str
    action_type: str
    target: str
    requested_operation: str
    policy_pack: str
    policy_id: str
    rule_id: str
    severity: str
    reason: str | None
    approver_group: str | None
    evidence_refs: list[str]
    correlation_id: str
    tenant_id: str | None = None
    workspace_id: str | None = None
    declared_intent: str | None = None
    intent: str | None = None
    requested_intent: str | None = None
    user_intent: str | None = None
    task_intent: str | None = None
    business_intent: str | None = None
    tool: str | None = None
    tool_name: str | None = None
    server: str | None = None
    mcp_server: str | None = None
    tool_vendor: str | None = None
    tool_capability: str | None = None
    operation: str | None = None
    context: JsonObject | None = None
    metadata: JsonObject | None = None
    labels: JsonObject | None = None
    # Server clock when the record was received: unlike `timestamp`, no client can set it.
    received_at: str | None = None


class StateChange(Struct):
    """One change of a session's state: who asked, when, from what, to what."""

    at: str
    by: str
    from_state: str = msgspec.field(name="from")
    to_state: str = msgspec.field(name="to")


class SessionRecord(Struct):
    """A session summary (SPEC §2) as stored in `activity_sessions.payload`."""

    schema_version: str
    session_id: str
    agent_id: str
    actor: str
    repository: str
    policy_pack: str
    state: str
    started_at: str
    updated_at: str
    decision_count: int
    blocked_count: int
    approval_required_count: int
    evidence_refs: list[str]
    tenant_id: str | None = None
    workspace_id: str | None = None
    # The (updated_at, decision_id) pair of the latest decision decides which record wins ties.
    last_decision_id: str | None = None
    metadata: JsonObject | None = None
    # Every state change, oldest first (docs/limits.md, "Session lifecycle").
    state_history: list[StateChange] | None = None


class SessionIn(Struct, forbid_unknown_fields=True):
    """A `POST /sessions` body: state and descriptive fields, never counts."""

    session_id: Id
    state: SessionState | None = None
    agent_id: Name | None = None
    actor: Name | None = None
    repository: Name | None = None
    policy_pack: Name | None = None
    tenant_id: ScopeId | None = None
    workspace_id: ScopeId | None = None
    metadata: JsonObject | None = None
    # Accepted for CAVRA compatibility and ignored: counts come from stored decisions.
    schema_version: Literal["cavra.session.v1"] | None = None
    decision_count: int | None = None
    blocked_count: int | None = None
    approval_required_count: int | None = None
    started_at: str | None = None
    updated_at: str | None = None
    evidence_refs: list[str] | None = None
    # Set by the server from the request (peer, later the token's principal); a client's value is replaced.
    changed_by: str | None = None


class QuotaCharge(Struct, array_like=True):
    """Whose daily quota a record counts against, and which UTC day (`YYYY-MM-DD`, fixed at admission)."""

    token_id: str
    day: str


class Accepted(Struct):
    """A validated decision on its way to the store."""

    record: DecisionRecord
    payload: bytes
    # Fields the server filled in; a replay that left them out again is still a duplicate.
    generated: tuple[str, ...]
    ignored_fields: list[str]
    # The tenant of the token that wrote it (None: an unbound token or open mode); planning.py checks ownership.
    writer_tenant: str | None = None
    # Set for a token with a daily quota: the store adds the record to that token's usage when it creates it.
    quota: QuotaCharge | None = None


class BoundSessionIn(SessionIn):
    """A session update from a tenant-bound token (built by auth.stamp_session, never decoded)."""

    writer_tenant: str | None = None


DECISION_DECODER = msgspec.json.Decoder(DecisionIn)
SESSION_DECODER = msgspec.json.Decoder(SessionIn)
ANY_DECODER = msgspec.json.Decoder(dict[str, msgspec.Raw])
ENCODER = msgspec.json.Encoder()


def utc_text(moment: datetime) -> str:
    """Format a moment as SPEC's sortable UTC text (microseconds, `+00:00`)."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def now_text() -> str:
    """Return the current time as sortable UTC text."""
    return utc_text(datetime.now(UTC))


def new_id(prefix: str) -> str:
    """Make a server-side id: the prefix and 12 hex characters."""
    return prefix + secrets.token_hex(6)


def decode_decision(raw: bytes | memoryview) -> tuple[DecisionIn, list[str]]:
    """Decode one decision, stripping unknown top-level fields and naming them."""
    try:
        return DECISION_DECODER.decode(raw), []
    except msgspec.ValidationError as exc:
        if "unknown field" not in str(exc):
            raise
    # Slow path, only for records carrying fields the contract does not know.
    fields = ANY_DECODER.decode(raw)
    ignored = sorted(name for name in fields if name not in KNOWN_DECISION_FIELDS)
    known = {name: value for name, value in fields.items() if name in KNOWN_DECISION_FIELDS}
    return DECISION_DECODER.decode(ENCODER.encode(known)), ignored


def _nonempty(value: str | None, default: str) -> str:
    return value if value else default


def normalize(item: DecisionIn, ignored: list[str], received_at: str | None = None) -> Accepted:
    """Apply SPEC §1 defaults and return the record with its stored JSON (`received_at`: default now)."""
    generated: list[str] = []
    decision_id = item.decision_id
    if decision_id is None:
        decision_id = new_id("dec_")
        generated.append("decision_id")
    if item.timestamp is None:
        timestamp = now_text()
        generated.append("timestamp")
    else:
        timestamp = utc_text(item.timestamp)
    correlation_id = item.correlation_id
    if correlation_id is None:
        correlation_id = new_id("corr_")
        generated.append("correlation_id")
    refs = item.evidence_refs
    if refs is None:
        refs = []
    elif isinstance(refs, str):
        refs = [refs]
    policy_pack = _nonempty(item.policy_pack, DECISION_DEFAULTS["policy_pack"])
    record = DecisionRecord(
        schema_version=DECISION_SCHEMA,
        decision_id=decision_id,
        session_id=item.session_id,
        timestamp=timestamp,
        decision=item.decision,
        agent_id=_nonempty(item.agent_id, DECISION_DEFAULTS["agent_id"]),
        actor=_nonempty(item.actor, DECISION_DEFAULTS["actor"]),
        repository=_nonempty(item.repository, DECISION_DEFAULTS["repository"]),
        action_type=_nonempty(item.action_type, DECISION_DEFAULTS["action_type"]),
        target=item.target or "",
        requested_operation=item.requested_operation or "",
        policy_pack=policy_pack,
        policy_id=_nonempty(item.policy_id, policy_pack),
        rule_id=_nonempty(item.rule_id, DECISION_DEFAULTS["rule_id"]),
        severity=item.severity or DECISION_DEFAULTS["severity"],
        reason=item.reason,
        approver_group=item.approver_group,
        evidence_refs=refs,
        correlation_id=correlation_id,
        tenant_id=item.tenant_id,
        workspace_id=item.workspace_id,
        context=item.context,
        metadata=item.metadata,
        labels=item.labels,
        received_at=received_at or now_text(),
    )
    for name in INTENT_FIELDS:
        value = getattr(item, name)
        if value:
            setattr(record, name, value)
    return Accepted(record, ENCODER.encode(record), tuple(generated), ignored)


# Filled by the server on every record: never part of what a replay is compared on.
ALWAYS_SERVER_FIELDS = ("received_at",)


def comparable(payload: dict[str, Any], generated: tuple[str, ...]) -> dict[str, Any]:
    """Drop server-filled fields so a replay is compared on what the client sent."""
    dropped = (*generated, *ALWAYS_SERVER_FIELDS)
    return {key: value for key, value in payload.items() if key not in dropped}


class RejectionReply(Struct):
    """A record a JetStream worker could not store after its 202: `conflict`, `forbidden` or `rejected`."""

    decision_id: str
    session_id: str
    tenant_id: str | None
    status: str
    detail: str
    rejected_at: str
