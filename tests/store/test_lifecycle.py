"""`prune`, `backup` and `import` on real stores, while the server's app has the store open."""

from __future__ import annotations

import gzip
import json
import sqlite3
from pathlib import Path
from typing import Any

import msgspec
import pytest

from cavra_ingest.cli import main as cli
from cavra_ingest.cli.importer import detect, import_path
from cavra_ingest.core.models import DecisionRecord
from cavra_ingest.core.summary import recount
from cavra_ingest.http import logs
from cavra_ingest.http.app import create_app
from cavra_ingest.settings import Settings
from cavra_ingest.store.prune import connect, cutoff, prune
from tests.conftest import MakeClient, decision, drain


@pytest.fixture(autouse=True)
def keep_pytest_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    # cli.main configures the root logger for a process; inside pytest it would drop the capture handlers.
    monkeypatch.setattr(logs, "configure", lambda *args, **kwargs: None)


def day(n: int, session: str = "s1", **fields: Any) -> dict[str, Any]:
    return decision(timestamp=f"2026-01-{n:02d}T12:00:00+00:00", session_id=session, **fields)


async def load(client: Any, records: list[dict[str, Any]]) -> None:
    response = await client.post("/decisions", json=records)
    assert response.status == 200, await response.text()
    await drain(client)


async def session_is_recount_of_its_decisions(client: Any, session_id: str) -> dict[str, Any]:
    session = await (await client.get(f"/sessions/{session_id}")).json()
    timeline = await (await client.get(f"/sessions/{session_id}/decisions")).json()
    decisions = [msgspec.convert(item, DecisionRecord) for item in timeline["items"]]
    expected = msgspec.to_builtins(recount(session_id, decisions, session["state"]))
    for name in ("decision_count", "blocked_count", "approval_required_count", "started_at", "updated_at",
                 "last_decision_id", "evidence_refs"):  # fmt: skip
        assert session[name] == expected[name], name
    return session


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_prune_while_serving_archives_recounts_and_resumes(make_client: MakeClient, tmp_path, kind) -> None:
    client = await make_client(kind)
    old = [day(1, decision="block", evidence_refs=["e-old"]), day(2, decision="require_approval"), day(3, "s2")]
    new = [day(20, decision="block"), day(21, evidence_refs=["e-new"])]
    await load(client, old + new)
    assert (await client.post("/sessions", json={"session_id": "s1", "state": "completed"})).status == 200
    conn = await connect(store_of_settings(client))
    archive = tmp_path / "old.ndjson.gz"
    try:
        dry = await prune(conn, cutoff("2026-01-10"), dry_run=True)
        assert (dry.matched, dry.decisions_removed) == (3, 0)
        report = await prune(conn, cutoff("2026-01-10"), batch_size=2, archive=archive)
        again = await prune(conn, cutoff("2026-01-10"), archive=archive)
    finally:
        await conn.close()
    assert (report.decisions_removed, report.batches, report.sessions_removed) == (3, 2, 1)
    assert again.decisions_removed == 0  # resumable: a re-run finds nothing left
    archived = [json.loads(line) for line in gzip.open(archive).read().splitlines()]
    assert sorted(item["decision_id"] for item in archived) == sorted(item["decision_id"] for item in old)
    session = await session_is_recount_of_its_decisions(client, "s1")
    assert (session["decision_count"], session["blocked_count"], session["approval_required_count"]) == (2, 1, 0)
    assert session["state"] == "completed" and session["evidence_refs"] == ["e-new"]
    assert (await client.get("/sessions/s2")).status == 404  # no decisions left
    # The server's writer goes on from the recounted summary.
    await load(client, [day(22, decision="block")])
    assert (await session_is_recount_of_its_decisions(client, "s1"))["blocked_count"] == 2


def store_of_settings(client: Any) -> Settings:
    from cavra_ingest.http.keys import SETTINGS_KEY

    return client.app[SETTINGS_KEY]


def test_prune_command_dry_run_and_bad_date(tmp_path, capsys) -> None:
    db = tmp_path / "a.db"
    assert cli.main(["migrate", "--sqlite", str(db)]) == 0
    assert cli.main(["prune", "--before", "2026-01-01", "--dry-run", "--sqlite", str(db)]) == 0
    assert "dry run: 0 decision(s) before 2026-01-01T00:00:00.000000+00:00" in capsys.readouterr().out
    assert cli.main(["prune", "--before", "last week", "--sqlite", str(db)]) == 1
    assert "--before: expected a date" in capsys.readouterr().err
    assert cli.main(["prune", "--before", "2026-01-01", "--json-store", str(tmp_path / "a.json")]) == 1
    assert "SQLite and PostgreSQL" in capsys.readouterr().err


async def test_backup_of_a_live_store_is_consistent_and_verified(make_client: MakeClient, tmp_path) -> None:
    from cavra_ingest.store.backup import BackupError, backup

    client = await make_client()
    await load(client, [decision() for _ in range(300)])
    target = tmp_path / "copy.db"
    pages = backup(store_of_settings(client).store.path, target)
    assert pages > 0 and not target.with_name("copy.db.partial").exists()
    with sqlite3.connect(target) as copy:
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert copy.execute("SELECT count(*) FROM activity_decisions").fetchone() == (300,)
        assert copy.execute("SELECT decision_count FROM activity_sessions").fetchone() == (300,)
    with pytest.raises(BackupError, match="exists"):
        backup(store_of_settings(client).store.path, target)


def test_backup_command_refuses_other_stores(tmp_path, capsys) -> None:
    assert cli.main(["backup", str(tmp_path / "b.db"), "--json-store", str(tmp_path / "a.json")]) == 2
    assert "not a SQLite file" in capsys.readouterr().err


async def sources(make_client: MakeClient, tmp_path: Path) -> dict[str, Path]:
    """A JSON store, a SQLite store and NDJSON/CSV exports holding the same records."""
    records = [day(1, "imp", decision="block", context={"k": [1, 2]}), day(2, "imp"), day(3, "imp2")]
    found = {}
    for kind in ("json", "sqlite"):
        client = await make_client(kind)
        await load(client, records)
        assert (await client.post("/sessions", json={"session_id": "imp", "state": "failed"})).status == 200
        found[kind] = store_of_settings(client).store.path
        if kind == "sqlite":
            for fmt in ("ndjson", "csv"):
                path = tmp_path / f"export.{fmt}"
                path.write_bytes(await (await client.get(f"/decisions.{fmt}")).read())
                found[fmt] = path
        await client.close()
    return found


async def test_import_every_format_then_again_is_all_duplicates(make_client: MakeClient, aiohttp_client, tmp_path):
    found = await sources(make_client, tmp_path)
    for kind, path in found.items():
        assert detect(path) == kind
        target = Settings.of(activity_db=str(tmp_path / f"into-{kind}.db"))
        first = await import_path(path, target)
        assert (first.created, first.duplicate, first.conflict, first.rejected) == (3, 0, 0, 0), first.summary()
        again = await import_path(path, target)
        assert (again.created, again.duplicate) == (0, 3), kind
        assert (first.sessions_updated, first.sessions_rejected) == ((2, 0) if kind in ("json", "sqlite") else (0, 0))
        client = await aiohttp_client(create_app(target))
        session = await session_is_recount_of_its_decisions(client, "imp")
        assert session["blocked_count"] == 1
        # Stores carry session states; exports do not have them.
        assert session["state"] == ("failed" if kind in ("json", "sqlite") else "active"), kind
        stored = await (await client.get("/decisions", params={"session_id": "imp", "decision": "block"})).json()
        assert stored["items"][0]["context"] == {"k": [1, 2]}
        await client.close()


async def test_import_reports_rejects_and_conflicts_with_reasons(tmp_path, capsys) -> None:
    kept = day(5)
    target = Settings.of(activity_db=str(tmp_path / "into.db"))
    source = tmp_path / "mixed.ndjson"
    source.write_text("\n".join(json.dumps(item) for item in [kept, day(6, decision="nope"), {"x": 1}]) + "\n")
    report = await import_path(source, target)
    assert (report.created, report.rejected) == (1, 2)
    assert any("$.decision" in reason for reason in report.reasons)
    source.write_text(json.dumps({**kept, "target": "changed"}) + "\n")
    conflict = await import_path(source, target)
    assert conflict.conflict == 1 and "decision_id already stored with other content" in conflict.summary()


def test_import_command_prints_progress_lines_and_the_report(tmp_path, capsys) -> None:
    source = tmp_path / "export.ndjson"
    source.write_text("".join(json.dumps(day(n % 28 + 1)) + "\n" for n in range(50)))
    assert cli.main(["import", str(source), "--sqlite", str(tmp_path / "into.db")]) == 0
    captured = capsys.readouterr()
    # Not a terminal: plain lines, no carriage returns.
    assert "\r" not in captured.err and captured.err.splitlines()[-1] == "import: 50 done"
    assert captured.out.startswith(f"imported {source} (ndjson): 50 created, 0 duplicate, 0 conflict, 0 rejected")
    assert cli.main(["import", str(tmp_path / "missing.ndjson")]) == 2


def test_progress_bar_on_a_terminal_and_lines_otherwise() -> None:
    import io

    from cavra_ingest.core.progress import Progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    plain, tty = io.StringIO(), Terminal()
    for stream in (plain, tty):
        progress = Progress("prune", 100, stream)
        for _ in range(100):
            progress.advance()
        progress.close()
    assert plain.getvalue().splitlines()[-1] == "prune: 100/100 (100%) done"
    assert 10 <= len(plain.getvalue().splitlines()) <= 12  # one line per 10 %
    assert tty.getvalue().endswith("\rprune: [" + "#" * 30 + "] 100/100 (100%) done\n")


def test_progress_counted_elsewhere_shows_its_detail() -> None:
    import io

    from cavra_ingest.core.progress import Progress

    stream = io.StringIO()
    counts = {"created": 0}
    with Progress("send", 10, stream, detail=lambda: f"(created {counts['created']})") as progress:
        counts["created"] = 7
        progress.set(7)
        progress.set(10)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "send: 7/10 (70%) (created 7)"
    assert lines[-1] == "send: 10/10 (100%) (created 7) done"
