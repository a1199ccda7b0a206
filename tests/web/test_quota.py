"""Per-token daily record quotas on real SQLite files and PostgreSQL schemas: 429 before queueing, usage kept
in the store (shared by servers, kept across restarts), only created records counted, a new UTC day afresh."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from cavra_ingest.core.errors import ApiError
from cavra_ingest.http.keys import QUOTAS_KEY, SETTINGS_KEY
from cavra_ingest.http.quota import Quotas, seconds_to_midnight, utc_day
from cavra_ingest.store.migrate import apply_migrations, migrations_dir
from cavra_ingest.store.tokens import SqliteTokens, token_store
from tests.conftest import MakeClient, decision
from tests.procs import Server
from tests.web.test_auth import bearer, secret

LATE = datetime(2026, 3, 1, 23, 59, 0, tzinfo=UTC)  # one minute before midnight
NEXT_DAY = datetime(2026, 3, 2, 0, 0, 5, tzinfo=UTC)


def at(client: TestClient, moment: datetime) -> None:
    """Set the wall clock the app's quotas count days by."""
    client.app[QUOTAS_KEY].wall = lambda: moment


async def stored_usage(client: TestClient, token_id: str, day: str) -> int:
    """Read the usage row straight from the store, past any cache."""
    tokens = token_store(client.app[SETTINGS_KEY])
    assert tokens is not None
    await tokens.open()
    try:
        return await tokens.usage(token_id, day)
    finally:
        await tokens.close()


async def token_id_of(client: TestClient, token: str) -> str:
    response = await client.get("/auth/whoami", headers=bearer(token))
    assert response.status == 200
    return str((await response.json())["token_id"])


async def total(client: TestClient, token: str) -> int:
    response = await client.get("/decisions", headers=bearer(token))
    assert response.status == 200
    return int((await response.json())["total"])


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_quota_reached_is_429_until_midnight_and_nothing_is_written(make_client: MakeClient, kind: str) -> None:
    client = await make_client(kind)
    at(client, LATE)
    token = await secret(client, ["ingest", "read"], "ten-one", daily_quota=5)
    token_id = await token_id_of(client, token)
    first = await client.post("/decisions", json=[decision() for _ in range(3)], headers=bearer(token))
    assert first.status == 200, await first.text()

    # 3 + 3 > 5: the whole batch is refused, not its first two records.
    refused = await client.post("/decisions", json=[decision() for _ in range(3)], headers=bearer(token))
    assert refused.status == 429
    assert refused.headers["Retry-After"] == "60"
    body = await refused.json()
    assert body["error"] == "too_many_requests" and "daily quota of 5 records" in body["detail"]
    assert await total(client, token) == 3
    assert await stored_usage(client, token_id, "2026-03-01") == 3

    assert (await client.post("/decisions", json=[decision(), decision()], headers=bearer(token))).status == 200
    one_more = await client.post("/decisions", json=decision(), headers=bearer(token))
    assert one_more.status == 429 and "used up" in (await one_more.json())["detail"]
    whoami = await (await client.get("/auth/whoami", headers=bearer(token))).json()
    assert (whoami["daily_quota"], whoami["used_today"]) == (5, 5)
    assert await total(client, token) == 5

    # A new UTC day starts afresh; yesterday's count stays where it was.
    at(client, NEXT_DAY)
    assert (await client.post("/decisions", json=decision(), headers=bearer(token))).status == 200
    assert await stored_usage(client, token_id, "2026-03-02") == 1
    assert await stored_usage(client, token_id, "2026-03-01") == 5
    # Tokens without a quota are not held back, and no usage is kept for them.
    free = await secret(client, ["ingest", "read"], "ten-two")
    assert (
        await client.post("/decisions", json=[decision(session_id="s-free") for _ in range(20)], headers=bearer(free))
    ).status == 200
    whoami = await (await client.get("/auth/whoami", headers=bearer(free))).json()
    assert (whoami["daily_quota"], whoami["used_today"]) == (None, None)
    assert await stored_usage(client, await token_id_of(client, free), "2026-03-02") == 0


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_duplicates_and_refused_records_do_not_count(make_client: MakeClient, kind: str) -> None:
    client = await make_client(kind)
    token = await secret(client, ["ingest", "read"], "ten-one", daily_quota=10)
    token_id = await token_id_of(client, token)
    today = utc_day(datetime.now(UTC))
    sent = [decision(session_id="s-q") for _ in range(3)]
    assert (await client.post("/decisions", json=sent, headers=bearer(token))).status == 200
    replay = await client.post("/decisions", json=sent, headers=bearer(token))
    assert replay.status == 200
    assert {r["status"] for r in (await replay.json())["results"]} == {"duplicate"}
    assert await stored_usage(client, token_id, today) == 3

    mixed = [
        decision(session_id="s-q"),
        decision(session_id="s-q", severity="catastrophic"),  # 422
        dict(sent[0], target="changed"),  # 409: same id, other content
        decision(session_id="s-q", tenant_id="ten-two"),  # 403: another tenant
        decision(session_id="s-q"),
    ]
    response = await client.post("/decisions", json=mixed, headers=bearer(token))
    assert response.status == 207
    assert [r["status"] for r in (await response.json())["results"]] == [
        "created",
        "invalid",
        "conflict",
        "forbidden",
        "created",
    ]
    assert await stored_usage(client, token_id, today) == 5
    # What did not count is still there to use: exactly five more.
    assert (await client.post("/decisions", json=[decision() for _ in range(5)], headers=bearer(token))).status == 200
    assert (await client.post("/decisions", json=decision(), headers=bearer(token))).status == 429
    assert await stored_usage(client, token_id, today) == 10


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_two_apps_on_one_database_share_the_count(make_client: MakeClient, kind: str) -> None:
    one = await make_client(kind, quota_cache_s=0.0)
    schema = one.app[SETTINGS_KEY].store.postgres_schema
    two = await make_client(kind, quota_cache_s=0.0, postgres_schema=schema)
    token = await secret(one, ["ingest", "read"], "ten-one", daily_quota=6)
    assert (await one.post("/decisions", json=[decision() for _ in range(4)], headers=bearer(token))).status == 200
    refused = await two.post("/decisions", json=[decision() for _ in range(3)], headers=bearer(token))
    assert refused.status == 429 and "(4 so far" in (await refused.json())["detail"]
    assert (await two.post("/decisions", json=[decision(), decision()], headers=bearer(token))).status == 200
    assert (await one.post("/decisions", json=decision(), headers=bearer(token))).status == 429
    assert await total(one, token) == 6


async def test_a_cached_count_sees_other_servers_within_the_cache_time(make_client: MakeClient) -> None:
    one = await make_client("sqlite", quota_cache_s=1.0)
    two = await make_client("sqlite", quota_cache_s=1.0)
    now = [1000.0]
    one.app[QUOTAS_KEY].clock = lambda: now[0]
    token = await secret(one, ["ingest", "read"], "ten-one", daily_quota=4)
    assert (await one.post("/decisions", json=decision(), headers=bearer(token))).status == 200
    assert (await two.post("/decisions", json=[decision() for _ in range(3)], headers=bearer(token))).status == 200
    # Within its cache time the first server still counts 1 of 4: this is the over-admission docs/limits.md
    # bounds. Once the cache runs out it reads 4 and refuses.
    now[0] += 0.5
    assert (await one.post("/decisions", json=decision(), headers=bearer(token))).status == 200
    now[0] += 1.0
    assert (await one.post("/decisions", json=decision(), headers=bearer(token))).status == 429
    assert await total(one, token) == 5


async def test_the_server_default_applies_to_tokens_without_their_own(make_client: MakeClient) -> None:
    client = await make_client("sqlite", default_daily_quota=2)
    plain = await secret(client, ["ingest", "read"], "ten-one")
    own = await secret(client, ["ingest", "read"], "ten-one", daily_quota=3)
    assert (await client.post("/decisions", json=[decision() for _ in range(3)], headers=bearer(plain))).status == 429
    assert (await client.post("/decisions", json=[decision() for _ in range(3)], headers=bearer(own))).status == 200
    whoami = await (await client.get("/auth/whoami", headers=bearer(plain))).json()
    assert (whoami["daily_quota"], whoami["used_today"]) == (2, 0)


def test_retry_after_counts_to_the_next_utc_midnight() -> None:
    assert seconds_to_midnight(LATE) == 60
    assert seconds_to_midnight(datetime(2026, 3, 1, 23, 59, 59, 500_000, tzinfo=UTC)) == 1
    assert seconds_to_midnight(datetime(2026, 3, 1, 0, 0, tzinfo=UTC)) == 86_400
    assert utc_day(datetime.fromisoformat("2026-03-01T23:30:00-02:00")) == "2026-03-02"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cavra_ingest", "token", *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.slow
async def test_cli_quota_and_a_restarted_server_still_refuses(tmp_path: Path) -> None:
    db = tmp_path / "served.db"
    made = cli("create", "--sqlite", str(db), "--scope", "ingest", "--scope", "read", "--daily-quota", "4")
    assert made.returncode == 0, made.stderr
    assert "at most 4 decisions per UTC day" in made.stdout
    token = made.stdout.strip().splitlines()[-1]
    listed = cli("list", "--sqlite", str(db)).stdout.splitlines()
    assert "QUOTA" in listed[0].split() and "4/day" in listed[1].split()
    refused = cli("create", "--sqlite", str(db), "--scope", "ingest", "--daily-quota", "0")
    assert refused.returncode == 1 and "daily quota must be a positive number" in refused.stderr

    headers = bearer(token)
    async with aiohttp.ClientSession() as http:
        for attempt in range(2):
            server = Server(db)
            try:
                await server.start()
                if attempt == 0:
                    body: Any = [decision() for _ in range(3)]
                    async with http.post(f"{server.url}/decisions", json=body, headers=headers) as response:
                        assert response.status == 200
                else:
                    # A new process on the same file: the count came from the file, not from memory.
                    async with http.get(f"{server.url}/auth/whoami", headers=headers) as response:
                        assert (await response.json())["used_today"] == 3
                    body = [decision(), decision()]
                    async with http.post(f"{server.url}/decisions", json=body, headers=headers) as response:
                        assert response.status == 429 and int(response.headers["Retry-After"]) >= 1
                    async with http.post(f"{server.url}/decisions", json=decision(), headers=headers) as response:
                        assert response.status == 200
                await server.terminate(15)
            finally:
                server.kill()


async def test_migration_015_upgrades_a_file_with_tokens(tmp_path: Path) -> None:
    before = tmp_path / "before"
    before.mkdir()
    for path in migrations_dir().glob("*.sql"):
        if path.name < "015":
            shutil.copy(path, before / path.name)
    db = tmp_path / "old.db"
    apply_migrations(db, before)
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO api_tokens (id, name, secret_hash, scopes, created_at) VALUES "
            "('tok_old', 'old', 'h', 'ingest', '2026-01-01T00:00:00.000000+00:00')"
        )
    assert apply_migrations(db)[0] == "015_token_quotas.sql"  # then any later ones
    tokens = SqliteTokens(db)
    assert [(t.id, t.daily_quota) for t in await tokens.list()] == [("tok_old", None)]
    assert await tokens.usage("tok_old", "2026-01-01") == 0


async def test_migration_015_upgrades_a_postgres_schema_with_tokens(tmp_path: Path) -> None:
    import asyncpg

    from cavra_ingest.store.migrate import apply_postgres_migrations
    from cavra_ingest.store.tokens import PostgresTokens
    from tests.conftest import POSTGRES_URL, drop_schema

    before = tmp_path / "before"
    before.mkdir()
    for path in migrations_dir("postgres").glob("*.sql"):
        if path.name < "015":
            shutil.copy(path, before / path.name)
    schema = "t_quota_upgrade"
    await drop_schema(schema)
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"; SET search_path TO "{schema}"')
        await apply_postgres_migrations(conn, before)
        await conn.execute(
            "INSERT INTO api_tokens (id, name, secret_hash, scopes, created_at) VALUES "
            "('tok_old', 'old', 'h', 'ingest', '2026-01-01T00:00:00.000000+00:00')"
        )
        assert (await apply_postgres_migrations(conn))[0] == "015_token_quotas.sql"
        tokens = PostgresTokens(POSTGRES_URL, schema)
        await tokens.open()
        try:
            assert [(t.id, t.daily_quota) for t in await tokens.list()] == [("tok_old", None)]
            assert await tokens.usage("tok_old", "2026-01-01") == 0
        finally:
            await tokens.close()
    finally:
        await conn.close()
        await drop_schema(schema)


async def test_records_committed_during_a_usage_read_are_never_missed() -> None:
    class SlowUsage:
        """A store whose read took its snapshot before this server's commit and answers later."""

        def __init__(self) -> None:
            self.started = asyncio.Event()
            self.gate = asyncio.Event()

        async def usage(self, token_id: str, day: str) -> int:
            self.started.set()
            await self.gate.wait()
            return 0

    store = SlowUsage()
    quotas = Quotas(store, cache_s=10.0)  # type: ignore[arg-type]
    reading = asyncio.ensure_future(quotas.check("tok", 10))
    await store.started.wait()
    held = quotas.reserve("tok", 10, 4)
    quotas.settle(held, 4)
    store.gate.set()
    await reading
    # The read said 0, but 4 were created while it ran: the count is 4, not 0.
    with pytest.raises(ApiError) as refused:
        await quotas.check("tok", 10, 7)
    assert refused.value.status == 429 and "(4 so far" in refused.value.detail
    await quotas.check("tok", 10, 6)


async def test_usage_that_cannot_be_read_is_a_503_and_nothing_is_written(make_client: MakeClient) -> None:
    """The quota is not waived when its count is unreadable: the request is refused, retryably, before queueing."""
    client = await make_client("sqlite", quota_cache_s=0.0)
    token = await secret(client, ["ingest", "read"], "ten-one", daily_quota=100)
    assert (await client.post("/decisions", json=decision(), headers=bearer(token))).status == 200
    with sqlite3.connect(client.app[SETTINGS_KEY].store.path) as db:
        db.execute("ALTER TABLE token_usage RENAME TO token_usage_away")
    refused = await client.post("/decisions", json=decision(), headers=bearer(token))
    assert refused.status == 503 and refused.headers["Retry-After"] == "1"
    assert "daily usage could not be read" in (await refused.json())["detail"]
    with sqlite3.connect(client.app[SETTINGS_KEY].store.path) as db:
        db.execute("ALTER TABLE token_usage_away RENAME TO token_usage")
    assert await total(client, token) == 1
    assert (await client.post("/decisions", json=decision(), headers=bearer(token))).status == 200
