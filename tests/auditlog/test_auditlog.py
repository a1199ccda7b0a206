"""Tampering with a real file through plain sqlite3, caught by `cavra-ingest verify`; evidence bundles; kill -9."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import aiohttp
import pytest

from cavra_ingest.auditlog.notes import Signer, checkpoint_text
from cavra_ingest.auditlog.tables import record_leaf
from cavra_ingest.cli import main as cli
from cavra_ingest.settings import Settings
from tests.auditing import build_log, consistency_ok, open_checkpoint, unb64
from tests.conftest import decision
from tests.procs import Server

N = 8


@pytest.fixture
def logged(tmp_path: Path) -> tuple[Path, list[str]]:
    db = tmp_path / "log.db"
    ids = asyncio.run(build_log(db, [decision(session_id="s-audit", decision="block") for _ in range(N)]))
    return db, ids


def verify(db: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli.main(["verify", "--sqlite", str(db)])
    return code, capsys.readouterr().out


def sql(db: Path, *statements: str, params: tuple = ()) -> None:
    conn = sqlite3.connect(db)
    with conn:
        for statement in statements:
            conn.execute(statement, params if "?" in statement else ())
    conn.close()


def test_an_intact_log_verifies(logged, capsys):
    db, _ = logged
    code, out = verify(db, capsys)
    assert code == 0 and "log intact" in out and f"{N} leaves checked against {N + 1} signed" in out


def test_edited_payload_is_named(logged, capsys):
    db, ids = logged
    sql(db, "UPDATE activity_decisions SET payload = replace(payload, '\"block\"', '\"allow\"') WHERE decision_id = ?",
        params=(ids[3],))  # fmt: skip
    code, out = verify(db, capsys)
    assert code == 1 and f"TAMPERED: decision {ids[3]} (leaf 3) was edited: its record changed" in out


def test_edited_payload_with_its_leaf_rehashed_is_named(logged, capsys):
    db, ids = logged
    conn = sqlite3.connect(db)
    payload = conn.execute("SELECT payload FROM activity_decisions WHERE decision_id = ?", (ids[5],)).fetchone()[0]
    forged = payload.replace('"block"', '"allow"')
    with conn:
        conn.execute("UPDATE activity_decisions SET payload = ?, decision = 'allow' WHERE decision_id = ?",
                     (forged, ids[5]))  # fmt: skip
        conn.execute("UPDATE audit_leaves SET leaf_hash = ? WHERE leaf_index = 5", (record_leaf(forged.encode()),))
    conn.close()
    code, out = verify(db, capsys)
    assert code == 1 and "differs from signed checkpoint 6" in out and f"decision {ids[5]} (leaf 5)" in out


def test_changed_outcome_column_is_named(logged, capsys):
    db, ids = logged
    sql(db, "UPDATE activity_decisions SET decision = 'allow' WHERE decision_id = ?", params=(ids[2],))
    code, out = verify(db, capsys)
    assert code == 1 and f"decision {ids[2]} (leaf 2) was edited: column decision is 'allow'" in out


def test_deleted_row_is_named(logged, capsys):
    db, ids = logged
    sql(db, "DELETE FROM activity_decisions WHERE decision_id = ?", params=(ids[4],))
    code, out = verify(db, capsys)
    assert code == 1 and f"TAMPERED: decision {ids[4]} (leaf 4) was deleted" in out


def test_deleted_row_and_leaf_is_named(logged, capsys):
    db, ids = logged
    sql(db, "DELETE FROM activity_decisions WHERE decision_id = ?", "DELETE FROM audit_leaves WHERE leaf_index = 4",
        params=(ids[4],))  # fmt: skip
    code, out = verify(db, capsys)
    assert code == 1 and "leaves 4..4 were deleted from the log" in out


COPY_COLUMNS = ("session_id, agent_id, actor, repository, policy_pack, action_type, target, rule_id, decision,"
                " severity, timestamp, correlation_id, tenant_id, workspace_id")  # fmt: skip


def forge(db: Path, source: str, new_id: str) -> str:
    """Copy a stored decision under a new id, as a forger with plain sqlite3 would; return its payload."""
    conn = sqlite3.connect(db)
    payload = conn.execute("SELECT payload FROM activity_decisions WHERE decision_id = ?", (source,)).fetchone()[0]
    payload = payload.replace(source, new_id)
    with conn:
        conn.execute(
            f"INSERT INTO activity_decisions (decision_id, payload, {COPY_COLUMNS})"
            f" SELECT ?, ?, {COPY_COLUMNS} FROM activity_decisions WHERE decision_id = ?",
            (new_id, payload, source),
        )
    conn.close()
    return str(payload)


def test_row_inserted_into_the_log_is_named(logged, capsys):
    db, ids = logged
    payload = forge(db, ids[0], "dec-forged")
    sql(
        db,
        "UPDATE audit_leaves SET leaf_index = leaf_index + 1000 WHERE leaf_index >= 2",
        "UPDATE audit_leaves SET leaf_index = leaf_index - 999 WHERE leaf_index >= 1000",
    )
    sql(db, "INSERT INTO audit_leaves VALUES (2, 'dec-forged', ?)", params=(record_leaf(payload.encode()),))
    code, out = verify(db, capsys)
    assert code == 1 and "differs from signed checkpoint 3" in out and "decision dec-forged (leaf 2)" in out


def test_swapped_leaves_are_named(logged, capsys):
    db, ids = logged
    sql(
        db,
        "UPDATE audit_leaves SET leaf_index = -1 WHERE leaf_index = 1",
        "UPDATE audit_leaves SET leaf_index = 1 WHERE leaf_index = 6",
        "UPDATE audit_leaves SET leaf_index = 6 WHERE leaf_index = -1",
    )
    code, out = verify(db, capsys)
    assert code == 1 and "differs from signed checkpoint 2" in out and f"decision {ids[6]} (leaf 1)" in out


def test_truncated_log_is_named(logged, capsys):
    db, ids = logged
    sql(db, "DELETE FROM audit_leaves WHERE leaf_index >= 5")
    code, out = verify(db, capsys)
    assert code == 1 and f"it has 5 leaves, checkpoint {N} signed {N}; the first missing is leaf 5" in out
    assert f"not in the log (written by another program, or before the log existed): {N - 5}" in out


def test_replaced_checkpoint_is_named(logged, capsys):
    db, _ = logged
    conn = sqlite3.connect(db)
    root = conn.execute("SELECT root_hash FROM audit_checkpoints WHERE tree_size = 4").fetchone()[0]
    conn.close()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    impostor = Signer("cavra-ingest/audit-log", Ed25519PrivateKey.generate())
    note = impostor.sign(checkpoint_text("cavra-ingest/audit-log", 4, root))
    sql(db, "UPDATE audit_checkpoints SET note = ? WHERE tree_size = 4", params=(note,))
    code, out = verify(db, capsys)
    assert code == 1 and "TAMPERED: checkpoint 4 was replaced" in out


def test_rows_written_by_another_program_are_reported_not_as_tampering(logged, capsys):
    db, ids = logged
    forge(db, ids[0], "dec-cavra")
    code, out = verify(db, capsys)
    assert code == 0 and "not in the log (written by another program, or before the log existed): 1: dec-cavra" in out


def test_evidence_bundle_round_trip_and_tampering(logged, capsys, tmp_path):
    db, ids = logged
    out_file = tmp_path / "bundle.json"
    assert cli.main(["evidence", "export", "--sqlite", str(db), "--session", "s-audit", "--out", str(out_file)]) == 0
    vkey = cli_public_key(db, capsys)
    capsys.readouterr()
    assert cli.main(["evidence", "verify", str(out_file), "--public-key", vkey]) == 0
    assert f"{N} record(s) checked against checkpoint {N}" in capsys.readouterr().out
    bundle = json.loads(out_file.read_text())

    def check(changed: dict) -> str:
        path = tmp_path / "changed.json"
        path.write_text(json.dumps(changed))
        assert cli.main(["evidence", "verify", str(path), "--public-key", vkey]) == 1
        return capsys.readouterr().out

    edited = json.loads(json.dumps(bundle))
    edited["records"][2]["record"]["decision"] = "allow"
    assert f"decision {ids[2]} (leaf 2) was edited" in check(edited)
    removed = json.loads(json.dumps(bundle))
    del removed["records"][5]
    assert f"decision {ids[5]} (leaf 5) was removed from the bundle" in check(removed)
    added = json.loads(json.dumps(bundle))
    added["records"].append({**added["records"][0], "leaf_index": 99})
    assert f"decision {ids[0]} (leaf 99) was added" in check(added)
    # A bundle re-signed with another key fails against the auditor's key.
    assert "bad signature" in check({**bundle, "checkpoint": bundle["checkpoint"].replace("\n8\n", "\n7\n")})


def cli_public_key(db: Path, capsys: pytest.CaptureFixture[str]) -> str:
    from cavra_ingest.auditlog.notes import key_path, load_signer

    settings = Settings.of(activity_db=str(db))
    return load_signer(key_path(settings), settings.audit.audit_log_origin, create=False).verifier.text()


async def test_route_bundle_verifies_offline(make_client, tmp_path):
    from cavra_ingest.auditlog.evidence import verify as verify_bundle
    from cavra_ingest.http.keys import AUDIT_KEY
    from tests.conftest import drain

    client = await make_client(checkpoint_interval_s=3600)
    await client.post("/decisions", json=[decision(session_id="s-web") for _ in range(5)])
    await drain(client)
    await client.app[AUDIT_KEY].make_checkpoint()
    await client.post("/decisions", json=decision(session_id="s-web"))  # not yet in a checkpoint
    response = await client.get("/sessions/s-web/evidence")
    assert response.status == 200 and "attachment" in response.headers["Content-Disposition"]
    bundle = await response.json()
    assert len(bundle["records"]) == 5 and len(bundle["not_in_log"]) == 1
    vkey = await (await client.get("/log/public-key")).text()
    assert verify_bundle(bundle, vkey)[0] == []
    assert (await client.get("/sessions/nope/evidence")).status == 404


@pytest.mark.slow
async def test_checkpoints_before_a_kill_are_consistent_with_the_one_after_restart(tmp_path):
    db = tmp_path / "killed.db"
    env = {"CAVRA_CHECKPOINT_INTERVAL_S": "0.02"}
    server = Server(db, env=env)
    await server.start()
    notes: list[str] = []
    try:
        async with aiohttp.ClientSession() as http:
            vkey = await (await http.get(f"{server.url}/log/public-key")).text()

            async def load() -> None:
                for _ in range(400):
                    async with http.post(f"{server.url}/decisions", json=[decision() for _ in range(20)]) as r:
                        assert r.status in (200, 503)

            async def watch() -> None:
                while len({n.split("\n")[1] for n in notes}) < 15:
                    async with http.get(f"{server.url}/log/checkpoint") as r:
                        if r.status == 200:
                            notes.append(await r.text())
                    await asyncio.sleep(0.01)

            loader = asyncio.create_task(load())
            await asyncio.wait_for(watch(), timeout=30)
            server.kill()
            loader.cancel()
            await asyncio.gather(loader, return_exceptions=True)
    finally:
        server.kill()
    restarted = Server(db, env=env)
    await restarted.start()
    try:
        async with aiohttp.ClientSession() as http:
            latest = await (await http.get(f"{restarted.url}/log/checkpoint")).text()
            _, size, root = open_checkpoint(latest, vkey)
            seen = {open_checkpoint(note, vkey)[1:] for note in notes}
            assert len(seen) >= 15 and size >= max(s for s, _ in seen)
            for first, first_root in sorted(seen):
                if first == 0:
                    continue
                async with http.get(f"{restarted.url}/log/consistency?first={first}&second={size}") as r:
                    proof = await r.json()
                assert consistency_ok(first, size, first_root, root, unb64(proof["consistency"])), first
    finally:
        await restarted.terminate(20)
    assert await asyncio.to_thread(cli.main, ["verify", "--sqlite", str(db)]) == 0
    # Leaves are only ever committed with their decisions: none without a record, none of those missing.
    conn = sqlite3.connect(db)
    assert (
        conn.execute("SELECT count(*) FROM audit_leaves").fetchone()[0]
        == conn.execute("SELECT count(*) FROM activity_decisions").fetchone()[0]
    )
    conn.close()


async def test_verify_on_postgres_names_an_edit(make_client, tmp_path, capsys):
    import asyncpg

    from cavra_ingest.http.keys import AUDIT_KEY, SETTINGS_KEY
    from tests.conftest import POSTGRES_URL, drain

    client = await make_client("postgres", signing_key=str(tmp_path / "key"), checkpoint_interval_s=3600)
    bodies = [decision(session_id="s-pg") for _ in range(6)]
    assert (await client.post("/decisions", json=bodies)).status == 200
    await drain(client)
    await client.app[AUDIT_KEY].make_checkpoint()
    vkey = await (await client.get("/log/public-key")).text()
    schema = client.app[SETTINGS_KEY].store.postgres_schema
    command = ["verify", "--postgres", POSTGRES_URL, "--schema", schema, "--public-key", vkey]
    assert await asyncio.to_thread(cli.main, command) == 0
    assert "6 leaves checked against 2 signed checkpoint(s)" in capsys.readouterr().out
    conn = await asyncpg.connect(POSTGRES_URL, server_settings={"search_path": schema})
    await conn.execute("UPDATE activity_decisions SET severity = 'critical' WHERE decision_id = $1",
                       bodies[3]["decision_id"])  # fmt: skip
    await conn.close()
    assert await asyncio.to_thread(cli.main, command) == 1
    assert f"decision {bodies[3]['decision_id']} (leaf 3) was edited: column severity" in capsys.readouterr().out


def test_pruned_decisions_are_reported_as_pruned_and_checked_against_the_archive(logged, capsys, tmp_path):
    db, ids = logged
    conn = sqlite3.connect(db)
    cut = conn.execute("SELECT timestamp FROM activity_decisions WHERE decision_id = ?", (ids[4],)).fetchone()[0]
    conn.close()
    archive = tmp_path / "old.ndjson.gz"
    assert cli.main(["prune", "--sqlite", str(db), "--before", cut, "--archive", str(archive)]) == 0
    capsys.readouterr()
    code, out = verify(db, capsys)
    assert code == 0 and "log intact" in out, out
    assert f"pruned by `cavra-ingest prune --before {cut}`: 4 decision(s)" in out
    assert cli.main(["verify", "--sqlite", str(db), "--archive", str(archive)]) == 0
    assert "checked against the archives" in capsys.readouterr().out
    # An archive edited after the fact no longer matches the leaves it claims.
    import gzip

    edited = gzip.decompress(archive.read_bytes()).replace(b'"block"', b'"allow"', 1)
    forged = tmp_path / "forged.ndjson"
    forged.write_bytes(edited)
    assert cli.main(["verify", "--sqlite", str(db), "--archive", str(forged)]) == 1
    assert f"TAMPERED: decision {ids[0]} (leaf 0) was pruned, and its archived record was edited" in (
        capsys.readouterr().out
    )
    # A decision deleted by hand after the prune is still a deletion, not a pruning.
    sql(db, "DELETE FROM activity_decisions WHERE decision_id = ?", params=(ids[6],))
    code, out = verify(db, capsys)
    assert code == 1 and f"TAMPERED: decision {ids[6]} (leaf 6) was deleted" in out
