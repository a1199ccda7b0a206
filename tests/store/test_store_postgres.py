"""The PostgreSQL store: a real server on loopback, a fresh schema per test."""

from __future__ import annotations

import asyncpg

from cavra_ingest.http.keys import STORE_KEY
from tests.conftest import POSTGRES_URL, decision


async def test_killed_connections_are_replaced_and_nothing_is_lost(make_client):
    client = await make_client("postgres")
    assert (await client.post("/decisions", json=decision())).status == 200
    schema = client.app[STORE_KEY].schema
    admin = await asyncpg.connect(POSTGRES_URL)
    try:
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
            f"cavra-ingest:{schema}",
        )
    finally:
        await admin.close()
    assert killed >= 1
    after = await client.post("/decisions", json=decision(decision_id="dec-after-kill"))
    assert after.status == 200
    session = await (await client.get("/sessions/sess-1")).json()
    assert session["decision_count"] == 2


async def test_disk_full_is_a_retryable_503_and_rolls_back(make_client):
    client = await make_client("postgres")
    schema = client.app[STORE_KEY].schema
    admin = await asyncpg.connect(POSTGRES_URL, server_settings={"search_path": schema})
    try:
        # The session upsert runs after the decision inserts: the fault must take them back too.
        await admin.execute(
            "CREATE FUNCTION full_disk() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN RAISE EXCEPTION 'could not extend file' USING ERRCODE = '53100'; END $$;"
            " CREATE TRIGGER full_disk BEFORE INSERT ON activity_sessions FOR EACH ROW EXECUTE FUNCTION full_disk()"
        )
        failed = await client.post("/decisions", json=[decision(), decision()])
        assert failed.status == 503
        assert "Retry-After" in failed.headers
        assert await admin.fetchval("SELECT count(*) FROM activity_decisions") == 0
        await admin.execute("DROP TRIGGER full_disk ON activity_sessions")
    finally:
        await admin.close()
    assert (await client.post("/decisions", json=[decision(), decision()])).status == 200
    assert (await (await client.get("/sessions/sess-1")).json())["decision_count"] == 2


async def test_two_servers_on_one_database_keep_exact_counts(make_client):
    first = await make_client("postgres")
    second = await make_client("postgres", postgres_schema=first.app[STORE_KEY].schema)
    sent = [decision(session_id="s-shared", decision="block" if i % 3 == 0 else "allow") for i in range(40)]
    for i, record in enumerate(sent):
        # Every record goes to both servers: one stores it, the other must report a duplicate.
        a, b = (first, second) if i % 2 else (second, first)
        assert (await a.post("/decisions", json=record)).status == 200
        replay = await b.post("/decisions", json=record)
        assert (await replay.json())["duplicate"] is True
    session = await (await second.get("/sessions/s-shared")).json()
    assert session["decision_count"] == 40
    assert session["blocked_count"] == sum(d["decision"] == "block" for d in sent)
