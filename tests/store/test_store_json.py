"""The JSON file store: CAVRA's file shape, atomic rewrites, recovery from a failed write."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import decision


async def test_file_keeps_cavras_shape(make_client, tmp_path):
    client = await make_client("json")
    await client.post("/decisions", json=[decision(decision="block"), decision()])
    data = json.loads((tmp_path / "activity.json").read_text())
    assert set(data) == {"decisions", "sessions"}
    assert len(data["decisions"]) == 2
    assert data["sessions"][0]["blocked_count"] == 1
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


async def test_a_file_written_by_cavra_loads_and_keeps_counting(make_client, tmp_path):
    old = decision(session_id="s-old", decision="block", decision_id="dec_cavra1")
    cavra_file = {
        "decisions": [{**old, "schema_version": "cavra.decision.v1"}],
        "sessions": [
            {
                "session_id": "s-old",
                "decision_count": 1,
                "blocked_count": 1,
                "started_at": old["timestamp"],
                "updated_at": old["timestamp"],
                "agent_id": "agent-a",
                "state": "active",
            }
        ],
    }
    (tmp_path / "activity.json").write_text(json.dumps(cavra_file))
    client = await make_client("json")
    assert (await client.get("/decisions/dec_cavra1")).status == 200
    await client.post("/decisions", json=decision(session_id="s-old", decision="block"))
    session = await (await client.get("/sessions/s-old")).json()
    assert (session["decision_count"], session["blocked_count"]) == (2, 2)


async def test_failed_write_is_a_503_that_changes_nothing_then_recovers(make_client, tmp_path):
    client = await make_client("json")
    await client.post("/decisions", json=decision(decision_id="dec-before"))
    before = (tmp_path / "activity.json").read_bytes()
    # Root ignores permissions, so the fault is a folder that stops being one.
    moved = tmp_path.parent / f"{tmp_path.name}-moved"
    tmp_path.rename(moved)
    Path(tmp_path).write_text("not a folder")
    try:
        failed = await client.post("/decisions", json=decision(decision_id="dec-during"))
        assert failed.status == 503
        assert "Retry-After" in failed.headers
        assert (await client.get("/decisions/dec-during")).status == 404
    finally:
        Path(tmp_path).unlink()
        moved.rename(tmp_path)
    assert (tmp_path / "activity.json").read_bytes() == before
    assert (await client.post("/decisions", json=decision(decision_id="dec-during"))).status == 200
    session = await (await client.get("/sessions/sess-1")).json()
    assert session["decision_count"] == 2
