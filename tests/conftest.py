"""Shared fixtures: the real app from the factory, on a real store under tmp_path."""

from __future__ import annotations

import functools
import itertools
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp.test_utils import TestClient

from cavra_ingest.http.app import create_app
from cavra_ingest.http.keys import RUNTIME_KEY, STORE_KEY
from cavra_ingest.settings import Settings

_ids = itertools.count(1)

MakeClient = Callable[..., Awaitable[TestClient]]


def decision(**fields: Any) -> dict[str, Any]:
    """A valid decision with a fresh id; keyword arguments override fields."""
    n = next(_ids)
    body: dict[str, Any] = {
        "decision": "allow",
        "session_id": "sess-1",
        "decision_id": f"dec-test-{n:06d}",
        "timestamp": f"2026-03-01T10:{(n // 60) % 60:02d}:{n % 60:02d}+00:00",
        "agent_id": "agent-a",
        "repository": "acme/api",
        "action_type": "read_file",
        "target": "src/app.py",
    }
    body.update(fields)
    return body


POSTGRES_URL = os.environ.get("CAVRA_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
# CI (`.ci/run`) sets this: a missing PostgreSQL server or browser is then a failure, not a skip.
REQUIRE_SERVICES = os.environ.get("CAVRA_REQUIRE_SERVICES", "").lower() in {"1", "true", "yes"}
# Long campaigns left out by `make test-fast` (`-m "not slow"`).
SLOW_FILES = {"test_powerloss.py", "test_faults.py", "test_fuzz_api.py", "test_console_browser.py"}


@functools.cache
def postgres_reachable() -> bool:
    parts = urlsplit(POSTGRES_URL)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5432), timeout=1):
            return True
    except OSError:
        return False


def require_postgres() -> None:
    """Skip a PostgreSQL test when no server listens, unless CAVRA_REQUIRE_SERVICES says it must run."""
    if postgres_reachable():
        return
    parts = urlsplit(POSTGRES_URL)
    message = f"no PostgreSQL server at {parts.hostname}:{parts.port or 5432} (set CAVRA_TEST_POSTGRES_URL)"
    if REQUIRE_SERVICES:
        pytest.fail(message + "; CAVRA_REQUIRE_SERVICES=1 requires it", pytrace=False)
    pytest.skip(message)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in SLOW_FILES:
            item.add_marker(pytest.mark.slow)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if "postgres" in item.nodeid.lower():
        require_postgres()


def store_settings(kind: str, tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for a fresh store of the given kind under tmp_path (or in a fresh schema)."""
    if kind == "json":
        return Settings.of(activity_store=str(tmp_path / "activity.json"), **overrides)
    if kind == "postgres":
        schema = overrides.pop("postgres_schema", None) or f"t_{uuid.uuid4().hex[:12]}"
        # The keys a SQLite store keeps beside its file: under tmp_path, not the working directory's .cavra/.
        keys = {"signing_key": str(tmp_path / "signing-key"), "sink_key_file": str(tmp_path / "sink-key")}
        return Settings.of(activity_db=POSTGRES_URL, postgres_schema=schema, **{**keys, **overrides})
    return Settings.of(activity_db=str(tmp_path / "activity.db"), **overrides)


@pytest.fixture(params=["sqlite", "json", "postgres"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return request.param


async def drop_schema(schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
async def make_client(aiohttp_client: Any, tmp_path: Path) -> Any:
    """Build a client for the real app; `kind` picks the store, other kwargs are settings."""
    schemas: list[str] = []
    clients: list[TestClient] = []

    async def make(kind: str = "sqlite", **overrides: Any) -> TestClient:
        settings = store_settings(kind, tmp_path, **overrides)
        if kind == "postgres":
            require_postgres()
            schemas.append(settings.store.postgres_schema)
        clients.append(await aiohttp_client(create_app(settings)))
        return clients[-1]

    yield make
    # Stop the apps (their background search indexers) before their schemas go: DROP SCHEMA against a running
    # indexer can deadlock.
    for client in clients:
        await client.close()
    for schema in schemas:
        await drop_schema(schema)


@pytest.fixture
async def client(make_client: MakeClient) -> TestClient:
    return await make_client()


@pytest.fixture
async def any_client(make_client: MakeClient, store_kind: str) -> TestClient:
    """A client on each store in turn: behaviour the contract says is the same everywhere."""
    return await make_client(store_kind)


def writer_of(client: TestClient) -> Any:
    """The app's batch writer (tests may look behind the Sink interface)."""
    return client.app[RUNTIME_KEY].writer


async def drain(client: TestClient) -> None:
    """Wait until the writer has committed everything queued so far."""
    await writer_of(client).drain()


def store_of(client: TestClient) -> Any:
    return client.app[STORE_KEY]
