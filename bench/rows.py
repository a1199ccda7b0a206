"""Decision rows shaped like the ones bench/lua/decisions.lua posts, for the plain-sqlite3 ceiling."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime

import msgspec

from cavra_ingest.core.models import DecisionIn, normalize
from cavra_ingest.store.sql import decision_row

OUTCOMES = ["allow", "allow", "allow", "allow", "warn", "audit_only", "block", "require_approval"]
ACTIONS = ["read_file", "write_file", "shell", "http_request", "mcp_call"]
SEVERITIES = ["low", "low", "medium", "high", "critical"]
DECODER = msgspec.json.Decoder(DecisionIn)


def decision(rng: random.Random, sessions: int, agents: int) -> dict[str, object]:
    """Return one decision as a client would post it (the same fields as the Lua script)."""
    s = rng.randrange(sessions)
    a = s % agents
    did = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    return {
        "decision": rng.choice(OUTCOMES),
        "session_id": f"sess-{s:05d}",
        "decision_id": did,
        "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{rng.randrange(10**6):06d}Z",
        "agent_id": f"agent-{a:03d}",
        "actor": "ai-agent",
        "repository": f"acme/repo-{a % 40:02d}",
        "action_type": rng.choice(ACTIONS),
        "target": f"src/module_{rng.randrange(10000):04d}/handler.py",
        "requested_operation": "edit file and run tests",
        "policy_pack": "cavra-ai-agent-baseline",
        "rule_id": f"runtime.fs.write.{rng.randrange(100):02d}",
        "severity": rng.choice(SEVERITIES),
        "reason": "write inside the repository working tree is allowed for this agent role",
        "evidence_refs": [f"ev://runs/{did}/step-{rng.randrange(1, 51)}"],
        "correlation_id": f"corr-{did}",
        "tool_name": "editor",
        "labels": {"env": "ci", "team": "platform"},
    }


def row(rng: random.Random, sessions: int, agents: int) -> tuple[object, ...]:
    """Return one activity_decisions row, stored JSON included, as the server would store it."""
    accepted = normalize(DECODER.decode(msgspec.json.encode(decision(rng, sessions, agents))), [])
    return decision_row(accepted)
