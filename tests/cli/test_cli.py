"""`cavra-ingest serve` as a real process on a real port: migrate, serve, stop on SIGTERM."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import aiohttp
import pytest

from cavra_ingest.settings import Settings
from tests.conftest import decision
from tests.procs import Server


@pytest.fixture
async def servers():
    """Start servers through the returned list's owner; every one is killed at teardown."""
    started: list[Server] = []
    yield started
    for server in started:
        server.kill()


async def start(servers: list[Server], db: Path | None, **kwargs) -> Server:
    server = Server(db, **kwargs)
    servers.append(server)
    await server.start()
    return server


async def test_serve_migrates_serves_and_drains_on_sigterm(tmp_path, servers):
    db = tmp_path / "served.db"
    server = await start(servers, db)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{server.url}/decisions", json=[decision() for _ in range(25)]) as response:
            assert response.status == 200
        async with http.get(f"{server.url}/console/config") as response:
            assert (await response.json())["activity_mode"] == "sqlite"
    code, _ = await server.terminate(Settings().writer.drain_deadline_s + 5)
    assert code == 0
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM activity_decisions").fetchone() == (25,)
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] >= 2


async def test_default_store_is_sqlite_under_dot_cavra(tmp_path, servers):
    server = await start(servers, None, cwd=tmp_path)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{server.url}/decisions", json=decision()) as response:
            assert response.status == 200
    assert (await server.terminate(15))[0] == 0
    with sqlite3.connect(tmp_path / ".cavra" / "activity.db") as conn:
        assert conn.execute("SELECT count(*) FROM activity_decisions").fetchone() == (1,)


def test_store_selection_follows_spec_precedence():
    assert Settings.from_env({}).store.kind == "sqlite"
    assert Settings.from_env({}).store.path == Path(".cavra/activity.db")
    json_only = Settings.from_env({"CAVRA_ACTIVITY_STORE": "/tmp/a.json"})
    assert (json_only.store.kind, json_only.store.path) == ("json", Path("/tmp/a.json"))
    both = Settings.from_env({"CAVRA_ACTIVITY_STORE": "/tmp/a.json", "CAVRA_ACTIVITY_DB": "/tmp/b.db"})
    assert (both.store.kind, both.store.path) == ("sqlite", Path("/tmp/b.db"))
    server_db = Settings.from_env({"CAVRA_ACTIVITY_DB": "postgresql://u:secret@db/activity"})
    assert (server_db.store.kind, server_db.store.label) == ("postgres", "postgresql://u:***@db/activity")
    assert Settings.from_env({"CAVRA_PORT": "9000"}, port=9100).server.port == 9100


@pytest.mark.slow
async def test_json_store_is_served_and_survives_a_restart(tmp_path, servers):
    store = tmp_path / "activity.json"
    sent = decision(decision="block")
    server = await start(servers, store)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{server.url}/decisions", json=sent) as response:
            assert response.status == 200
        async with http.get(f"{server.url}/console/config") as response:
            assert (await response.json())["activity_mode"] == "json"
    assert (await server.terminate(15))[0] == 0
    restarted = await start(servers, store)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{restarted.url}/sessions/{sent['session_id']}") as response:
            assert (await response.json())["blocked_count"] == 1
