"""`token create` and `token revoke` are access events (GET /access-events), never with the secret."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cavra_ingest", *args], capture_output=True, text=True, timeout=60)


def test_token_creation_and_revocation_are_recorded(tmp_path: Path) -> None:
    db = str(tmp_path / "activity.db")
    made = cli("token", "create", "--sqlite", db, "--scope", "read", "--tenant", "acme", "--name", "auditor")
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip().splitlines()[-1]
    token_id = made.stdout.split("created token ", 1)[1].split(" ", 1)[0]
    revoked = cli("token", "revoke", "--sqlite", db, token_id)
    assert revoked.returncode == 0, revoked.stderr
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT kind, outcome, tenant_id, detail, sub FROM access_events ORDER BY id").fetchall()
    assert [row[:3] for row in rows] == [("token-created", "ok", "acme"), ("token-revoked", "ok", "acme")]
    assert token_id in rows[0][3] and token_id in rows[1][3] and rows[0][4].startswith("cli:")
    assert secret not in str(rows)
