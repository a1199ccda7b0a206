"""Checks on a PostgreSQL schema: every summary equals a recount, every decision has one leaf."""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec

from cavra_ingest.models import DecisionRecord
from cavra_ingest.summary import recount


async def check_schema(dsn: str, schema: str, *, leaves: bool = False) -> dict[str, Any]:
    """Assert summaries equal recounts (and, if asked, leaves number every decision once); return the ids."""
    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        by_session: dict[str, list[DecisionRecord]] = {}
        ids: set[str] = set()
        for (payload,) in await conn.fetch("SELECT payload FROM activity_decisions"):
            record = msgspec.json.decode(payload, type=DecisionRecord)
            ids.add(record.decision_id)
            by_session.setdefault(record.session_id, []).append(record)
        rows = await conn.fetch(
            "SELECT session_id, decision_count, blocked_count, approval_required_count, started_at, updated_at,"
            " agent_id, payload FROM activity_sessions"
        )
        assert {row[0] for row in rows} >= set(by_session)
        for session_id, count, blocked, approval, started, updated, agent, payload in rows:
            if session_id not in by_session:
                assert (count, blocked, approval) == (0, 0, 0), session_id
                continue
            expected = recount(session_id, by_session[session_id])
            got = (count, blocked, approval, started, updated, agent, msgspec.json.decode(payload)["evidence_refs"])
            assert got == (
                expected.decision_count,
                expected.blocked_count,
                expected.approval_required_count,
                expected.started_at,
                expected.updated_at,
                expected.agent_id,
                expected.evidence_refs,
            ), session_id
            assert msgspec.json.decode(payload)["last_decision_id"] == expected.last_decision_id, session_id
        if leaves:
            indexes = await conn.fetch("SELECT leaf_index, decision_id FROM audit_leaves ORDER BY leaf_index")
            assert [row[0] for row in indexes] == list(range(len(indexes)))
            assert sorted(row[1] for row in indexes) == sorted(ids)
        return {"ids": ids, "sessions": len(rows)}
    finally:
        await conn.close()
