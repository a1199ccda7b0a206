"""CAVRA's own layouts (SPEC §5) open, upgrade and read right, and stay CAVRA's after cavra-ingest writes."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from cavra_ingest.core.models import Timestamp, utc_text
from cavra_ingest.http.keys import SETTINGS_KEY
from cavra_ingest.store.migrate import apply_migrations
from cavra_ingest.store.recount import recount_sqlite
from tests import cavra_layouts as layouts
from tests.conftest import decision, drain
from tests.procs import Server

ORDER = [5, 3, 1, 2, 4]  # timestamp descending, then decision_id ascending (dec 1 and 2 tie)


def ids(*numbers: int) -> list[str]:
    return [f"dec_cavra{n:07d}" for n in numbers]


# (query, expected decisions in listing order): every SPEC filter, and time ranges in every spelling.
EXPECTED = [
    ({}, ORDER),
    ({"session_id": "sess-a"}, [3, 1, 2]),
    ({"session_id": "sess-b"}, [5, 4]),
    ({"agent_id": "agent-1"}, [3, 1, 2]),
    ({"repository": "acme/web"}, [5, 4]),
    ({"repository": "acme/api"}, [1, 2]),
    ({"policy_pack": "cavra-ai-agent-baseline"}, ORDER),
    ({"decision": "block"}, [5, 1]),
    ({"decision": "require_approval"}, [3]),
    ({"severity": "informational"}, [2]),
    ({"severity": "high"}, [1]),
    ({"action_type": "execute_command"}, [5, 3, 1]),
    ({"action_type": "read_file"}, [2, 4]),
    # A row exactly at `since` is in, whether the bound or the row says `Z`, `+00:00` or another offset.
    ({"since": "2026-04-01T10:00:00Z"}, [5, 3, 1, 2]),
    ({"since": "2026-04-01T12:00:00+02:00"}, [5, 3, 1, 2]),
    ({"since": "2026-04-01T10:00:00.000001+00:00"}, [5, 3]),
    ({"until": "2026-04-01T10:00:00+00:00"}, [4]),
    ({"until": "2026-04-01T10:30:00.5Z"}, [1, 2, 4]),
    ({"since": "2026-04-01T10:00:00Z", "until": "2026-04-01T11:00:00.123Z", "severity": "informational"}, [2]),
]
LAYOUTS = [*layouts.SQLITE_LAYOUTS, "json"]


async def serve_layout(make_client, tmp_path: Path, layout: str):
    if layout == "json":
        layouts.json_layout(tmp_path / "activity.json")
        return await make_client("json")
    layouts.SQLITE_LAYOUTS[layout](tmp_path / "activity.db")
    return await make_client("sqlite")


@pytest.mark.parametrize("layout", LAYOUTS)
async def test_cavra_layout_serves_every_filter_and_range(make_client, tmp_path, layout):
    client = await serve_layout(make_client, tmp_path, layout)
    for params, expected in EXPECTED:
        response = await client.get("/decisions", params=params)
        assert response.status == 200, (params, await response.text())
        body = await response.json()
        assert [item["decision_id"] for item in body["items"]] == ids(*expected), params
        assert body["total"] == len(expected), params
        # Cursor pages walk the same order, one row at a time.
        walked, cursor = [], None
        while True:
            page = await (
                await client.get(
                    "/decisions", params={**params, "limit": "1", **({"cursor": cursor} if cursor else {})}
                )
            ).json()
            walked += [item["decision_id"] for item in page["items"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert walked == ids(*expected), params


@pytest.mark.parametrize("layout", LAYOUTS)
async def test_cavra_layout_single_reads_sessions_and_refusals(make_client, tmp_path, layout):
    client = await serve_layout(make_client, tmp_path, layout)
    record = await (await client.get("/decisions/dec_cavra0000003")).json()
    assert record["timestamp"] == "2026-04-01T10:30:00.500000+00:00"
    assert record["severity"] == "low" and record["decision"] == "require_approval"
    assert record["repository"] is None  # as CAVRA wrote it
    sessions = await (await client.get("/sessions")).json()
    assert [s["session_id"] for s in sessions["items"]] == ["sess-a", "sess-b"]
    summary = await (await client.get("/sessions/sess-b")).json()
    assert (summary["decision_count"], summary["blocked_count"], summary["approval_required_count"]) == (2, 1, 0)
    assert summary["started_at"] == summary["updated_at"] == "2026-04-01T09:59:59.999999+00:00"
    since = await (await client.get("/sessions", params={"since": "2026-04-01T10:00:00Z"})).json()
    assert [s["session_id"] for s in since["items"]] == ["sess-a"]
    # An out-of-enum value no row holds is still a 400 naming the allowed values.
    for params in ({"severity": "bogus"}, {"severity": ["informational", "bogus"]}, {"decision": "nope"}):
        response = await client.get("/decisions", params=params)
        assert response.status == 400
        assert "must be one of" in (await response.json())["detail"]
    facets = await (await client.get("/decisions/facets", params={"severity": "informational"})).json()
    assert facets["total"] == 1
    export = await client.get("/decisions.ndjson", params={"severity": "informational"})
    assert (await export.text()).count("\n") == 1


@pytest.mark.parametrize("layout", list(layouts.SQLITE_LAYOUTS))
async def test_writes_keep_cavras_layout_and_cavra_can_reopen_the_file(make_client, tmp_path, layout):
    db = tmp_path / "activity.db"
    client = await serve_layout(make_client, tmp_path, layout)
    later = decision(session_id="sess-a", decision="block", timestamp="2026-04-01T13:00:00+00:00", repository="r")
    assert (await client.post("/decisions", json=later)).status == 200
    await drain(client)
    summary = await (await client.get("/sessions/sess-a")).json()
    assert (summary["decision_count"], summary["blocked_count"]) == (4, 2)
    names = layouts.indexes(db)
    assert {name for name, _, _ in layouts.CAVRA_INDEXES} <= names.keys()
    assert layouts.duplicate_indexes(db) == []
    with sqlite3.connect(db) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"activity_sessions", "activity_decisions", "schema_migrations"} <= tables
        if layout != "store_only":
            assert {"evidence_records", "approvals", "registry_entries"} <= tables
        # CAVRA's current store opens the upgraded file (its tenant indexes need the columns 005 added)...
        layouts.cavra_store_opens(conn)
        # ...and writes a decision with a `Z` time; since/until compare it as an instant.
        layouts.cavra_writes_decision(
            conn, {**layouts.DECISIONS[0], "decision_id": "dec_cavra_late", "timestamp": "2026-04-01T15:00:00+02:00"}
        )
        conn.commit()
    assert layouts.duplicate_indexes(db) == []
    found = await (await client.get("/decisions", params={"since": "2026-04-01T13:00:00Z"})).json()
    # The same instant as ours, spelt otherwise: a tie, broken by decision_id ascending ('-' < '_').
    assert [item["decision_id"] for item in found["items"]] == [later["decision_id"], "dec_cavra_late"]
    late = await (await client.get("/decisions/dec_cavra_late")).json()
    assert late["timestamp"] == "2026-04-01T13:00:00.000000+00:00"


async def test_recount_rebuilds_what_cavra_froze(make_client, tmp_path):
    db = tmp_path / "activity.db"
    layouts.runner_layout(db)
    apply_migrations(db)
    assert recount_sqlite(db, batch_sessions=1) == 2
    client = await make_client("sqlite")
    summary = await (await client.get("/sessions/sess-a")).json()
    assert summary["started_at"] == "2026-04-01T10:00:00.000000+00:00"
    assert summary["updated_at"] == "2026-04-01T10:30:00.500000+00:00"  # frozen at the first by CAVRA
    assert summary["last_decision_id"] == "dec_cavra0000003"
    assert summary["evidence_refs"] == ["ev-1", "ev-2", "ev-3"]
    assert (summary["decision_count"], summary["blocked_count"], summary["approval_required_count"]) == (3, 1, 1)
    assert summary["repository"] == "local"  # the latest decision's null takes SPEC's default


@pytest.mark.slow
def test_recount_command_one_session_and_store_selection(tmp_path):
    db = tmp_path / "activity.db"
    layouts.runner_layout(db)
    run = [sys.executable, "-m", "cavra_ingest", "recount"]
    done = subprocess.run([*run, "--sqlite", str(db), "--session", "sess-b"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "recounted 1 session(s)" in done.stdout
    with sqlite3.connect(db) as conn:
        rows = dict(conn.execute("SELECT session_id, payload FROM activity_sessions").fetchall())
    assert '"last_decision_id":"dec_cavra0000005"' in rows["sess-b"]
    assert "last_decision_id" not in rows["sess-a"]
    env_run = subprocess.run(run, capture_output=True, text=True, env={"CAVRA_ACTIVITY_DB": str(db), "PATH": ""})
    assert env_run.returncode == 0 and "recounted 2 session(s)" in env_run.stdout, env_run.stderr
    missing = subprocess.run(run, capture_output=True, text=True, env={"PATH": ""})
    assert missing.returncode == 2 and "CAVRA_ACTIVITY_DB" in missing.stderr


async def test_recount_on_postgres_matches_the_incremental_summary(make_client):
    from cavra_ingest.store.recount import recount_postgres
    from tests.conftest import POSTGRES_URL

    client = await make_client("postgres")
    schema = client.app[SETTINGS_KEY].store.postgres_schema
    for n, outcome in enumerate(("allow", "block", "require_approval")):
        body = decision(
            session_id="pg-s", decision=outcome, timestamp=f"2026-04-01T10:00:0{n}Z", evidence_refs=[f"e{n}"]
        )
        assert (await client.post("/decisions", json=body)).status == 200
    before = await (await client.get("/sessions/pg-s")).json()
    assert await recount_postgres(POSTGRES_URL, schema) == 1
    after = await (await client.get("/sessions/pg-s")).json()
    assert after == before


def test_an_older_cavra_ingest_file_reopened_by_cavra_loses_its_duplicate_indexes(tmp_path):
    db = tmp_path / "old.db"
    apply_migrations(db)
    old_names = {
        "idx_activity_sessions_agent": "idx_activity_sessions_agent_id",
        "idx_activity_sessions_policy": "idx_activity_sessions_policy_pack",
        "idx_activity_sessions_updated": "idx_activity_sessions_updated_at",
        "idx_activity_decisions_session": "idx_activity_decisions_session_id",
        "idx_activity_decisions_agent": "idx_activity_decisions_agent_id",
        "idx_activity_decisions_policy": "idx_activity_decisions_policy_pack",
    }
    with sqlite3.connect(db) as conn:
        # Lay the file out as cavra-ingest before 007 left it, then let CAVRA's store open it.
        conn.execute("DELETE FROM schema_migrations WHERE id = '007_cavra_layout.sql'")
        for new, old in old_names.items():
            table, column = next((t, c) for n, t, c in layouts.CAVRA_INDEXES if n == new)
            conn.execute(f"DROP INDEX {new}")
            conn.execute(f"CREATE INDEX {old} ON {table}({column})")
        layouts.cavra_store_opens(conn)
    assert len(layouts.duplicate_indexes(db)) == 6
    assert apply_migrations(db) == ["007_cavra_layout.sql"]
    assert layouts.duplicate_indexes(db) == []
    assert not set(old_names.values()) & layouts.indexes(db).keys()


FORMS = [
    "2026-04-01T10:00:00Z",
    "2026-04-01T10:00:00z",
    "2026-04-01t10:00:00.5Z",
    "2026-04-01T10:00:00+00:00",
    "2026-04-01T12:30:00.123+02:30",
    "2026-04-01T05:00:00.123456-05:00",
    "2026-04-01 10:00:00.1Z",
    "2025-12-31T23:59:59.999999-00:30",
    "2026-04-01T10:00:00.000000+00:00",
]


@pytest.mark.parametrize("text", FORMS)
def test_the_migrations_sql_time_normalisation_matches_the_services(tmp_path, text):
    db = tmp_path / "t.db"
    apply_migrations(db)
    with sqlite3.connect(db) as conn:
        # The trigger rewrites what CAVRA writes; the service writes utc_text of the parsed moment.
        layouts.cavra_writes_decision(conn, {**layouts.DECISIONS[0], "timestamp": text})
        stored, payload_time = conn.execute(
            "SELECT timestamp, json_extract(payload, '$.timestamp') FROM activity_decisions"
        ).fetchone()
    expected = utc_text(msgspec.convert(text.replace("t", "T").replace("z", "Z"), Timestamp))
    assert stored == payload_time == expected


def test_an_unreadable_cavra_time_is_kept_not_refused(tmp_path):
    db = tmp_path / "t.db"
    apply_migrations(db)
    with sqlite3.connect(db) as conn:
        layouts.cavra_writes_decision(conn, {**layouts.DECISIONS[0], "timestamp": "yesterday"})
        assert conn.execute("SELECT timestamp FROM activity_decisions").fetchone() == ("yesterday",)


async def test_serve_starts_on_cavras_current_store_file(tmp_path):
    db = tmp_path / "current.db"
    layouts.current_store_layout(db)
    server = Server(db)
    await server.start()
    try:
        import aiohttp

        async with aiohttp.ClientSession() as http, http.get(f"{server.url}/decisions?severity=informational") as r:
            assert r.status == 200
            assert [item["decision_id"] for item in (await r.json())["items"]] == ids(2)
    finally:
        await server.terminate(10)


def test_one_index_per_leading_column_each_under_cavras_name(tmp_path):
    # 013's diet: a 004 index that a composite starts with is that composite, under CAVRA's name, so
    # CAVRA's store (CREATE INDEX IF NOT EXISTS by name) finds each and inserts pay for one B-tree.
    db = tmp_path / "diet.db"
    apply_migrations(db)
    shapes = layouts.indexes(db)
    for name, table, column in layouts.CAVRA_INDEXES:
        assert shapes[name][0] == table and shapes[name][1][0].split()[0] == column, (name, shapes[name])
    leading = [(table, keys[0].split()[0]) for table, keys in shapes.values()]
    assert len(leading) == len(set(leading)), sorted(leading)
    decisions = [name for name, (table, _) in shapes.items() if table == "activity_decisions"]
    # The id, six under CAVRA's names, correlation and 025's rule index (the rule facets at 5 M,
    # docs/performance.md): with the rowid table, 10 B-trees per inserted decision.
    assert len(decisions) == 9, decisions
    with sqlite3.connect(db) as conn:
        layouts.cavra_store_opens(conn)
    # CAVRA's store adds only its tenant indexes, which no cavra-ingest index starts like.
    assert layouts.indexes(db).keys() - shapes.keys() == {name for name, _ in layouts.TENANT_INDEXES}
    assert layouts.duplicate_indexes(db) == []
