"""The batch writer against a real SQLite file: backpressure, faults, drain, concurrency."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from cavra_ingest.core.sink import WriteItem, WriteResult
from cavra_ingest.http.keys import STORE_KEY
from cavra_ingest.store import Store
from tests.conftest import decision, writer_of


class GatedStore:
    """The real store, whose writes wait for a gate: lets a test hold the writer busy."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()
        self.kind = inner.kind

    async def write(self, items: list[WriteItem]) -> list[WriteResult]:
        self.entered.set()
        await self.gate.wait()
        return await self.inner.write(items)


def gate_writer(client) -> GatedStore:
    gated = GatedStore(client.app[STORE_KEY])
    writer_of(client).store = gated
    return gated


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for a condition on live state, failing after a deadline."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


def rows(db: Path, sql: str, params: tuple = ()) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, params).fetchall()


async def test_full_queue_is_refused_at_once_with_retry_after(make_client):
    client = await make_client(queue_max_records=3)
    gated = gate_writer(client)
    first = asyncio.create_task(client.post("/decisions", json=decision()))
    await gated.entered.wait()
    second = asyncio.create_task(client.post("/decisions", json=[decision(), decision()]))
    await until(lambda: writer_of(client).pending_records == 3)
    refused = await client.post("/decisions", json=decision())
    assert refused.status == 503
    assert refused.headers["Retry-After"] == "1"
    assert "queue is full" in (await refused.json())["detail"]
    gated.gate.set()
    assert [(await first).status, (await second).status] == [200, 200]
    retried = await client.post("/decisions", json=decision())
    assert retried.status == 200
    assert writer_of(client).pending_records == 0


async def test_locked_database_is_a_retryable_503_then_recovers(make_client, tmp_path):
    client = await make_client(sqlite_busy_timeout_ms=50)
    blocker = sqlite3.connect(tmp_path / "activity.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        response = await client.post("/decisions", json=decision(decision_id="dec-locked"))
        assert response.status == 503
        assert "Retry-After" in response.headers
        assert (await (await client.get("/decisions")).json())["total"] == 0
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    response = await client.post("/decisions", json=decision(decision_id="dec-locked"))
    assert response.status == 200
    assert (await (await client.get("/sessions/sess-1")).json())["decision_count"] == 1


async def test_fault_mid_transaction_rolls_back_the_whole_batch(make_client, tmp_path):
    db = tmp_path / "activity.db"
    client = await make_client()
    # The summary upsert runs after the decision inserts: a fault there must take them back too.
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TRIGGER flaky BEFORE INSERT ON activity_sessions WHEN NEW.session_id = 's-flaky'"
            " BEGIN INSERT INTO fault_switch VALUES (1); END"
        )
    batch = [decision(session_id="s-ok"), decision(session_id="s-flaky"), decision(session_id="s-ok")]
    response = await client.post("/decisions", json=batch)
    assert response.status == 503
    assert "Retry-After" in response.headers
    assert rows(db, "SELECT count(*) FROM activity_decisions") == [(0,)]
    assert rows(db, "SELECT count(*) FROM activity_sessions") == [(0,)]
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE fault_switch (x)")
    response = await client.post("/decisions", json=batch)
    assert response.status == 200
    assert rows(db, "SELECT session_id, decision_count FROM activity_sessions ORDER BY 1") == [
        ("s-flaky", 1),
        ("s-ok", 2),
    ]


async def test_unwritable_record_does_not_block_the_records_beside_it(make_client, tmp_path):
    db = tmp_path / "activity.db"
    client = await make_client()
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TRIGGER poison BEFORE INSERT ON activity_decisions WHEN NEW.target = 'poison'"
            " BEGIN SELECT RAISE(ABORT, 'poisoned record'); END"
        )
    gated = gate_writer(client)
    # Three requests end up in one transaction; only the poisoned record may fail.
    good = asyncio.create_task(client.post("/decisions", json=decision(decision_id="dec-good")))
    await gated.entered.wait()
    mixed = asyncio.create_task(
        client.post("/decisions", json=[decision(decision_id="dec-a"), decision(decision_id="dec-p", target="poison")])
    )
    later = asyncio.create_task(client.post("/decisions", json=decision(decision_id="dec-later")))
    await until(lambda: writer_of(client).pending_records == 4)
    gated.gate.set()
    assert (await good).status == 200
    assert (await later).status == 200
    mixed_response = await mixed
    assert mixed_response.status == 207
    results = (await mixed_response.json())["results"]
    assert [(r["decision_id"], r["status"]) for r in results] == [("dec-a", "created"), ("dec-p", "rejected")]
    assert "poisoned record" in results[1]["error"]["detail"]
    stored = {row[0] for row in rows(db, "SELECT decision_id FROM activity_decisions")}
    assert stored == {"dec-good", "dec-a", "dec-later"}
    assert rows(db, "SELECT decision_count FROM activity_sessions") == [(3,)]


async def test_stop_drains_everything_queued_and_refuses_new_writes(make_client, tmp_path):
    client = await make_client()
    writer = writer_of(client)
    gated = gate_writer(client)
    posts = [asyncio.create_task(client.post("/decisions", json=decision())) for _ in range(10)]
    await until(lambda: writer.pending_records == 10)
    stopping = asyncio.create_task(writer.stop())
    await until(lambda: writer.closing)
    refused = await client.post("/decisions", json=decision())
    assert refused.status == 503
    assert "Retry-After" in refused.headers
    gated.gate.set()
    await stopping
    assert [(await post).status for post in posts] == [200] * 10
    assert rows(tmp_path / "activity.db", "SELECT count(*) FROM activity_decisions") == [(10,)]


async def test_drain_deadline_fails_what_was_not_committed(make_client, tmp_path):
    client = await make_client(drain_deadline_s=0.2)
    writer = writer_of(client)
    gate_writer(client)  # never opened: the store never finishes
    posts = [asyncio.create_task(client.post("/decisions", json=decision())) for _ in range(3)]
    await until(lambda: writer.pending_records == 3)
    await writer.stop()
    responses = [await post for post in posts]
    assert [r.status for r in responses] == [503, 503, 503]
    assert all("Retry-After" in r.headers for r in responses)
    assert rows(tmp_path / "activity.db", "SELECT count(*) FROM activity_decisions") == [(0,)]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "json", "postgres"])
async def test_fifty_concurrent_clients_give_exact_counts(make_client, tmp_path, kind):
    client = await make_client(kind)
    sessions = [f"s-conc-{n}" for n in range(5)]
    outcomes = ["allow", "block", "require_approval", "warn"]

    async def agent(n: int) -> list[dict]:
        mine = [
            decision(session_id=sessions[(n + i) % 5], decision=outcomes[(n * i) % 4], agent_id=f"agent-{n}")
            for i in range(20)
        ]
        for start in range(0, 10):
            assert (await client.post("/decisions", json=mine[start])).status == 200
        assert (await client.post("/decisions", json=mine[10:])).status == 200
        # Replays must not change a count.
        assert (await client.post("/decisions", json=mine[:3])).status == 200
        return mine

    sent = [d for batch in await asyncio.gather(*(agent(n) for n in range(50))) for d in batch]
    listed = await (await client.get("/decisions", params={"limit": 1})).json()
    assert listed["total"] == len(sent) == 1000
    for session_id in sessions:
        mine = [d for d in sent if d["session_id"] == session_id]
        summary = await (await client.get(f"/sessions/{session_id}")).json()
        assert summary["decision_count"] == len(mine)
        assert summary["blocked_count"] == sum(d["decision"] == "block" for d in mine)
        assert summary["approval_required_count"] == sum(d["decision"] == "require_approval" for d in mine)
    stats = writer_of(client).stats
    assert stats.records == 1000 + 150
    assert stats.transactions < 50 * 12, "concurrent requests should share transactions"
