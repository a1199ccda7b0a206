"""Checks on a PostgreSQL schema: every summary equals a recount, every decision has one leaf."""

from __future__ import annotations

from typing import Any

import asyncpg

from .procs import SUMMARY_COLUMNS, assert_summaries_recount


async def check_schema(dsn: str, schema: str, *, leaves: bool = False) -> dict[str, Any]:
    """Assert summaries equal recounts (and, if asked, leaves number every decision once); return the ids."""
    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        payloads = [row[0] for row in await conn.fetch("SELECT payload FROM activity_decisions")]
        rows = await conn.fetch(SUMMARY_COLUMNS)
        ids = assert_summaries_recount(payloads, [tuple(row) for row in rows])
        if leaves:
            indexes = await conn.fetch("SELECT leaf_index, decision_id FROM audit_leaves ORDER BY leaf_index")
            assert [row[0] for row in indexes] == list(range(len(indexes)))
            assert sorted(row[1] for row in indexes) == sorted(ids)
        return {"ids": ids, "sessions": len(rows)}
    finally:
        await conn.close()
