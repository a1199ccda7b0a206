"""PostgreSQL without a global lock: several servers on one database stay exact under any interleaving."""

from __future__ import annotations

import asyncio
import random

import asyncpg
import pytest

from cavra_ingest.http.keys import AUDIT_KEY, STORE_KEY
from tests.auditing import signed_size
from tests.conftest import POSTGRES_URL, decision, drain
from tests.pgcheck import check_schema

KINDS = ["allow", "block", "require_approval", "warn"]


@pytest.mark.slow
async def test_four_servers_with_replays_and_conflicts_equal_a_recount(make_client):
    first = await make_client("postgres", checkpoint_interval_s=3600)
    schema = first.app[STORE_KEY].schema
    servers = [first] + [
        await make_client("postgres", postgres_schema=schema, checkpoint_interval_s=3600) for _ in range(3)
    ]
    rng = random.Random(17)
    records = [
        decision(
            session_id=f"s-{rng.randrange(8)}",
            decision=rng.choice(KINDS),
            # Out of order and with ties: latest-decision fields break ties by decision_id.
            timestamp=f"2026-03-01T10:{rng.randrange(5):02d}:00+00:00",
            agent_id=f"agent-{rng.randrange(3)}",
            evidence_refs=[f"ev-{rng.randrange(20)}"],
        )
        for _ in range(400)
    ]
    # The same id under another session, sent at once to another server: one creates it, the other conflicts.
    rivals = [dict(records[i], session_id="s-rival") for i in range(0, 40, 4)]
    # Every record is sent twice, to different servers, in different batches.
    sends = [(rng.randrange(4), r) for r in records] + [(rng.randrange(4), r) for r in records + rivals]
    rng.shuffle(sends)
    batches: list[tuple[int, list[dict]]] = []
    while sends:
        size = rng.randint(1, 25)
        chunk, sends = sends[:size], sends[size:]
        for server in range(4):
            mine = [r for s, r in chunk if s == server]
            if mine and len({r["decision_id"] for r in mine}) == len(mine):
                batches.append((server, mine))
            elif mine:
                batches.extend((server, [r]) for r in mine)

    async def post(server: int, body: list[dict]) -> list[dict]:
        response = await servers[server].post("/decisions", json=body)
        assert response.status in (200, 207, 409), await response.text()
        return (await response.json())["results"]

    results = [r for rs in await asyncio.gather(*(post(s, b) for s, b in batches)) for r in rs]
    created = [r["decision_id"] for r in results if r["status"] == "created"]
    assert len(created) == len(set(created)) == len(records)  # each id created exactly once, anywhere
    assert {r["status"] for r in results} <= {"created", "duplicate", "conflict"}
    assert sum(r["status"] == "conflict" for r in results) >= len(rivals)
    for server in servers:
        await drain(server)
    stored = await check_schema(POSTGRES_URL, schema)
    assert stored["ids"] == {r["decision_id"] for r in records}
    # The sequencer gives every committed decision exactly one leaf, numbered without gaps.
    assert await signed_size(first.app[AUDIT_KEY]) == len(records)
    await check_schema(POSTGRES_URL, schema, leaves=True)


async def test_writers_hold_no_global_lock(make_client):
    """Two sessions' batches commit while a third transaction holds another session's row."""
    client = await make_client("postgres")
    schema = client.app[STORE_KEY].schema
    assert (await client.post("/decisions", json=decision(session_id="held"))).status == 200
    conn = await asyncpg.connect(POSTGRES_URL, server_settings={"search_path": schema})
    try:
        async with conn.transaction():
            await conn.execute("SELECT 1 FROM activity_sessions WHERE session_id = 'held' FOR UPDATE")
            # A global lock would queue this behind the open transaction until the timeout.
            async with asyncio.timeout(5):
                response = await client.post("/decisions", json=[decision(session_id="free")])
            assert response.status == 200
            waiting = asyncio.ensure_future(client.post("/decisions", json=[decision(session_id="held")]))
            await asyncio.sleep(0.3)
            assert not waiting.done()  # the held session's writer waits on its row, and only there
        assert (await waiting).status == 200
    finally:
        await conn.close()
    await check_schema(POSTGRES_URL, schema)


async def test_a_duplicate_only_batch_leaves_no_empty_session(make_client):
    client = await make_client("postgres")
    one = decision(session_id="s-a")
    assert (await client.post("/decisions", json=one)).status == 200
    # The same id under a new session: a conflict, and the placeholder summary for s-b is not kept.
    response = await client.post("/decisions", json=[dict(one, session_id="s-b")])
    assert (await response.json())["results"][0]["status"] == "conflict"
    assert (await client.get("/sessions/s-b")).status == 404
