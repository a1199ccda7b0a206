"""`cavra-ingest token` against real stores and a real server: secrets never stored, logged or echoed."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from cavra_ingest.store.tokens import PREFIX, TokenError, hash_secret, new_secret, new_token, parse_duration
from tests.conftest import POSTGRES_URL, decision, drop_schema
from tests.procs import Server, free_port


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cavra_ingest", *args], capture_output=True, text=True, timeout=60, env=env
    )


def create(*args: str) -> str:
    done = cli("token", "create", *args)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_secrets_are_random_prefixed_and_hashed() -> None:
    secrets = {new_secret() for _ in range(100)}
    assert len(secrets) == 100
    assert all(s.startswith(PREFIX) and len(s) == len(PREFIX) + 43 and s[len(PREFIX) :].isalnum() for s in secrets)
    secret = secrets.pop()
    assert hash_secret(secret) != secret and len(hash_secret(secret)) == 64
    assert parse_duration("90d").days == 90 and parse_duration("12h").total_seconds() == 43200
    for bad in ("0d", "90", "d", "-1d", "1y"):
        with pytest.raises(TokenError):
            parse_duration(bad)
    with pytest.raises(TokenError):
        new_token(["read"], tenant_id="no spaces allowed")
    with pytest.raises(TokenError):
        new_token(["read"], workspace_id="ws-1")


@pytest.mark.slow
async def test_cli_create_list_revoke_and_no_secret_anywhere(tmp_path: Path) -> None:
    db = tmp_path / "served.db"
    secret = create("--sqlite", str(db), "--scope", "ingest", "--scope", "read", "--tenant", "acme", "--name", "ci")
    assert secret.startswith(PREFIX)
    listed = cli("token", "list", "--sqlite", str(db))
    assert listed.returncode == 0 and "ci" in listed.stdout and "acme" in listed.stdout
    assert secret not in listed.stdout
    token_id = listed.stdout.splitlines()[1].split()[0]
    server = Server(db)
    try:
        await server.start()
        async with aiohttp.ClientSession() as http:
            ok = {"Authorization": f"Bearer {secret}"}
            async with http.post(f"{server.url}/decisions", json=decision(), headers=ok) as response:
                assert response.status == 200
                assert (await response.json())["tenant_id"] == "acme"
            wrong = {"Authorization": f"Bearer {secret}x"}
            async with http.get(f"{server.url}/decisions", headers=wrong) as response:
                assert response.status == 401 and secret not in await response.text()
            revoked = cli("token", "revoke", "--sqlite", str(db), token_id)
            assert revoked.returncode == 0, revoked.stderr
            # The server's cache lives at most auth_cache_s (1 s): poll, bounded, until it refuses.
            for _ in range(60):
                async with http.get(f"{server.url}/decisions", headers=ok) as response:
                    if response.status == 401:
                        break
                await asyncio.sleep(0.05)
            assert response.status == 401
        await server.terminate(15)
    finally:
        server.kill()
    assert "revoked" in cli("token", "list", "--sqlite", str(db)).stdout
    for path in tmp_path.iterdir():
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


@pytest.mark.slow
def test_serve_on_a_public_address_without_token_refuses_to_start(tmp_path: Path) -> None:
    done = cli("serve", "--host", "0.0.0.0", "--port", str(free_port()), "--db", str(tmp_path / "a.db"))
    assert done.returncode != 0
    assert "cavra-ingest token create" in done.stderr and "--insecure-no-auth" in done.stderr


def test_json_store_refuses_tokens_with_a_reason(tmp_path: Path) -> None:
    env = {**os.environ, "CAVRA_ACTIVITY_STORE": str(tmp_path / "a.json")}
    env.pop("CAVRA_ACTIVITY_DB", None)
    done = cli("token", "create", "--scope", "read", env=env)
    assert done.returncode == 1 and "JSON store keeps no tokens" in done.stderr


@pytest.mark.slow
async def test_cli_on_postgres_stores_only_the_hash() -> None:
    import asyncpg

    schema = "t_tokens_cli"
    await drop_schema(schema)
    try:
        secret = create("--postgres", POSTGRES_URL, "--schema", schema, "--scope", "admin")
        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            rows = await conn.fetch(f'SELECT * FROM "{schema}".api_tokens')
        finally:
            await conn.close()
        assert len(rows) == 1 and rows[0]["secret_hash"] == hash_secret(secret)
        assert secret not in str([dict(row) for row in rows])
        assert secret not in cli("token", "list", "--postgres", POSTGRES_URL, "--schema", schema).stdout
    finally:
        await drop_schema(schema)
