"""Reading what CAVRA itself wrote (SPEC §5): times as its clients sent them, nulls, unknown values."""

from __future__ import annotations

from typing import Any

import msgspec

from cavra_ingest.core.models import DECISION_DEFAULTS, DECISION_SCHEMA, DecisionRecord, Timestamp, utc_text

# CAVRA leaves these null or absent; a stored decision read back for a summary takes SPEC §1's defaults.
STORED_DEFAULTS = {**DECISION_DEFAULTS, "correlation_id": ""}


def utc_or_same(value: Any) -> Any:
    """Return an RFC 3339 time as SPEC's sortable UTC text; anything unreadable is returned unchanged."""
    if not isinstance(value, str):
        return value
    try:
        return utc_text(msgspec.convert(value, Timestamp))
    except (msgspec.ValidationError, OverflowError, ValueError):
        return value


def without_nulls(data: dict[str, Any]) -> dict[str, Any]:
    """Drop the keys CAVRA wrote as null, so defaults apply in their place."""
    return {key: value for key, value in data.items() if value is not None}


def decision_from_stored(data: dict[str, Any]) -> DecisionRecord | None:
    """Read a stored decision leniently (CAVRA's nulls, any severity, any time form); None if unusable."""
    decision_id, session_id = data.get("decision_id"), data.get("session_id")
    if not isinstance(decision_id, str) or not isinstance(session_id, str) or not isinstance(data.get("decision"), str):
        return None
    fields = {**STORED_DEFAULTS, **without_nulls(data)}
    policy_pack = str(fields["policy_pack"])
    refs = fields.get("evidence_refs")
    if isinstance(refs, str):
        refs = [refs]
    return DecisionRecord(
        schema_version=DECISION_SCHEMA,
        decision_id=decision_id,
        session_id=session_id,
        timestamp=str(utc_or_same(fields.get("timestamp", ""))),
        decision=fields["decision"],
        agent_id=str(fields["agent_id"]),
        actor=str(fields["actor"]),
        repository=str(fields["repository"]),
        action_type=str(fields["action_type"]),
        target=str(fields["target"]),
        requested_operation=str(fields["requested_operation"]),
        policy_pack=policy_pack,
        policy_id=str(fields.get("policy_id") or policy_pack),
        rule_id=str(fields["rule_id"]),
        severity=str(fields["severity"]),
        reason=fields.get("reason"),
        approver_group=fields.get("approver_group"),
        evidence_refs=[str(ref) for ref in refs] if isinstance(refs, list) else [],
        correlation_id=str(fields["correlation_id"]),
        tenant_id=fields.get("tenant_id"),
        workspace_id=fields.get("workspace_id"),
    )
