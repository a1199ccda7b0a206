"""`cavra-ingest serve` as a real process on a real port: migrate, serve, stop on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp

from cavra_ingest.settings import Settings

from .conftest import decision


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serving(env: dict[str, str], cwd: Path) -> Iterator[tuple[subprocess.Popen, str]]:
    """Run `python -m cavra_ingest serve` until the block ends; yield the process and base URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "cavra_ingest", "serve", "--port", str(port)],
        env={**os.environ, **env},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.05)
        yield process, f"http://127.0.0.1:{port}"
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        if process.stdout:
            process.stdout.close()


async def test_serve_migrates_serves_and_drains_on_sigterm(tmp_path):
    db = tmp_path / "served.db"
    with serving({"CAVRA_ACTIVITY_DB": str(db)}, tmp_path) as (process, url):
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/healthz") as response:
                assert response.status == 200
            async with http.post(f"{url}/decisions", json=[decision() for _ in range(25)]) as response:
                assert response.status == 200
            async with http.get(f"{url}/console/config") as response:
                assert (await response.json())["activity_mode"] == "sqlite"
        process.send_signal(signal.SIGTERM)
        assert process.wait(Settings().drain_deadline_s + 5) == 0
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM activity_decisions").fetchone() == (25,)
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] >= 2


async def test_default_store_is_sqlite_under_dot_cavra(tmp_path):
    env = {"CAVRA_ACTIVITY_DB": "", "CAVRA_ACTIVITY_STORE": ""}
    with serving(env, tmp_path) as (process, url):
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{url}/decisions", json=decision()) as response:
                assert response.status == 200
        process.send_signal(signal.SIGINT)
        assert process.wait(15) == 0
    assert (tmp_path / ".cavra" / "activity.db").exists()


def test_store_selection_follows_spec_precedence():
    assert Settings.from_env({}).store_kind == "sqlite"
    assert Settings.from_env({}).store_path == Path(".cavra/activity.db")
    json_only = Settings.from_env({"CAVRA_ACTIVITY_STORE": "/tmp/a.json"})
    assert (json_only.store_kind, json_only.store_path) == ("json", Path("/tmp/a.json"))
    both = Settings.from_env({"CAVRA_ACTIVITY_STORE": "/tmp/a.json", "CAVRA_ACTIVITY_DB": "/tmp/b.db"})
    assert (both.store_kind, both.store_path) == ("sqlite", Path("/tmp/b.db"))
    flag = Settings.from_env({"CAVRA_PORT": "9000"}, port=9100)
    assert flag.port == 9100


async def test_json_store_is_served_and_survives_a_restart(tmp_path):
    store = tmp_path / "activity.json"
    env = {"CAVRA_ACTIVITY_STORE": str(store), "CAVRA_ACTIVITY_DB": ""}
    sent = decision(decision="block")
    with serving(env, tmp_path) as (process, url):
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{url}/decisions", json=sent) as response:
                assert response.status == 200
            async with http.get(f"{url}/console/config") as response:
                assert (await response.json())["activity_mode"] == "json"
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    with serving(env, tmp_path) as (process, url):
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/sessions/{sent['session_id']}") as response:
                assert (await response.json())["blocked_count"] == 1
