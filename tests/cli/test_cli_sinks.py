"""`cavra-ingest sinks` against a real SQLite file, and a real server delivering what the CLI added."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import decision
from tests.procs import Server
from tests.sinkreceivers import decode_webhook, http_receiver, until
from tests.store.test_tokens import cli
from tests.workers.test_sink_faults import ENV


def test_add_list_pause_remove_and_refusals(tmp_path: Path) -> None:
    db = str(tmp_path / "a.db")
    added = cli("sinks", "add", "--sqlite", db, "--name", "s1", "--kind", "webhook", "--target",
                "http://127.0.0.1:9/x", "--filter", "decision=block")  # fmt: skip
    assert added.returncode == 0, added.stderr
    secret = added.stdout.strip().splitlines()[-1]
    assert secret.startswith("whsec_") and secret not in added.stderr
    sealed = sqlite3.connect(db).execute("SELECT secret_box FROM sinks").fetchone()[0]
    assert secret not in sealed and secret[6:] not in sealed, "the secret is kept sealed, never in clear"
    again = cli("sinks", "add", "--sqlite", db, "--name", "s1", "--kind", "webhook", "--target", "http://h/")
    assert again.returncode == 1 and "exists" in again.stderr
    bad = cli("sinks", "add", "--sqlite", db, "--name", "s2", "--kind", "webhook", "--target", "http://h/",
              "--filter", "decision=nope")  # fmt: skip
    assert bad.returncode == 1 and "filter" in bad.stderr
    assert cli("sinks", "pause", "--sqlite", db, "s1").returncode == 0
    listed = cli("sinks", "list", "--sqlite", db)
    assert "s1" in listed.stdout and "paused" in listed.stdout and "s2" not in listed.stdout
    assert secret not in listed.stdout
    shown = cli("sinks", "show", "--sqlite", db, "s1")
    assert '"state": "paused"' in shown.stdout and secret not in shown.stdout
    assert cli("sinks", "remove", "--sqlite", db, "s1").returncode == 0
    assert cli("sinks", "show", "--sqlite", db, "s1").returncode == 1


async def test_a_sink_added_by_the_cli_is_delivered_by_a_running_server(tmp_path: Path) -> None:
    db = tmp_path / "activity.db"
    server = Server(db, env=ENV)
    async with http_receiver(decode_webhook, "/hook") as receiver:
        await server.start()
        try:
            added = cli("sinks", "add", "--sqlite", str(db), "--name", "cli", "--kind", "webhook",
                        "--target", receiver.url)  # fmt: skip
            assert added.returncode == 0, added.stderr
            receiver.secret = added.stdout.strip().splitlines()[-1]
            records = [decision() for _ in range(10)]
            async with aiohttp.ClientSession() as http:
                async with http.post(f"{server.url}/decisions", json=records) as response:
                    assert response.status == 200
            await until(lambda: receiver.ids() == {r["decision_id"] for r in records}, what="CLI sink delivery")
            assert receiver.secret not in server.log()
        finally:
            server.kill()


@pytest.mark.slow
def test_add_with_events_and_the_refusals_of_a_filter_on_access_events(tmp_path: Path) -> None:
    db = str(tmp_path / "a.db")
    base = ["sinks", "add", "--sqlite", db, "--kind", "webhook", "--target", "http://127.0.0.1:9/x"]
    added = cli(*base, "--name", "both", "--events", "decisions,access")
    assert added.returncode == 0, added.stderr
    only = cli(*base, "--name", "logins", "--events", "access", "--tenant", "acme")
    assert only.returncode == 0, only.stderr
    filtered = cli(*base, "--name", "f", "--events", "access", "--filter", "decision=block")
    assert filtered.returncode == 1 and "filter" in filtered.stderr
    unknown = cli(*base, "--name", "u", "--events", "decisions,logins")
    assert unknown.returncode == 1 and "events" in unknown.stderr and "'logins'" in unknown.stderr
    rows = sqlite3.connect(db).execute("SELECT name, events, tenant_id FROM sinks ORDER BY name").fetchall()
    assert rows == [("both", "decisions access", None), ("logins", "access", "acme")]
    listed = cli("sinks", "list", "--sqlite", db)
    assert "decisions,access" in listed.stdout
    assert '"events": [\n    "access"\n  ]' in cli("sinks", "show", "--sqlite", db, "logins").stdout
    # Pausing keeps what the sink follows.
    assert cli("sinks", "pause", "--sqlite", db, "logins").returncode == 0
    assert sqlite3.connect(db).execute("SELECT events FROM sinks WHERE name = 'logins'").fetchone() == ("access",)
