"""Proof routes, checked by the independent RFC 9162 verifier in tests/auditing.py."""

from __future__ import annotations

import math
import struct

import msgspec
import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from cavra_ingest.auditlog.jcs import canonical
from cavra_ingest.http.keys import AUDIT_KEY
from tests.auditing import consistency_ok, inclusion_ok, leaf_of, open_checkpoint, unb64
from tests.conftest import decision, drain


async def sign(client) -> int:
    await drain(client)
    return await client.app[AUDIT_KEY].make_checkpoint()


async def vkey_of(client) -> str:
    response = await client.get("/log/public-key")
    assert response.status == 200 and response.content_type == "text/plain"
    return await response.text()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_proofs_across_tiles_verify_independently(make_client, tmp_path, kind):
    client = await make_client(kind, signing_key=str(tmp_path / "key"), checkpoint_interval_s=3600)
    vkey = await vkey_of(client)
    first = [decision(session_id="s-tiles") for _ in range(300)]
    assert (await client.post("/decisions", json=first)).status == 200
    assert await sign(client) == 300
    second = [decision(session_id="s-tiles") for _ in range(421)]
    assert (await client.post("/decisions", json=second)).status == 200
    assert await sign(client) == 721
    note = await (await client.get("/log/checkpoint")).text()
    origin, size, root = open_checkpoint(note, vkey)
    assert (origin, size) == ("cavra-ingest/audit-log", 721)
    bodies = first + second
    for index in (0, 1, 255, 256, 299, 300, 511, 512, 700, 720):
        decision_id = bodies[index]["decision_id"]
        record = await (await client.get(f"/decisions/{decision_id}")).json()
        proof = await (await client.get(f"/decisions/{decision_id}/proof")).json()
        assert proof["leaf_index"] == index and proof["tree_size"] == 721 and proof["checkpoint"] == note
        assert inclusion_ok(leaf_of(record), index, 721, unb64(proof["inclusion"]), root), index
        # Against the older checkpoint by its size.
        if index < 300:
            old = await (await client.get(f"/decisions/{decision_id}/proof?tree_size=300")).json()
            _, old_size, old_root = open_checkpoint(old["checkpoint"], vkey)
            assert old_size == 300
            assert inclusion_ok(leaf_of(record), index, 300, unb64(old["inclusion"]), old_root)
            assert not inclusion_ok(leaf_of(record), index, 300, unb64(old["inclusion"]), root)
    response = await client.get("/log/consistency?first=300&second=721")
    proof = await response.json()
    _, _, old_root = open_checkpoint(
        (await (await client.get(f"/decisions/{bodies[0]['decision_id']}/proof?tree_size=300")).json())["checkpoint"],
        vkey,
    )
    assert consistency_ok(300, 721, old_root, root, unb64(proof["consistency"]))
    assert not consistency_ok(300, 721, root, old_root, unb64(proof["consistency"]))


async def test_every_pair_of_small_checkpoints_is_consistent(make_client):
    client = await make_client(checkpoint_interval_s=3600)
    vkey = await vkey_of(client)
    roots = {}
    for _ in range(1, 10):
        assert (await client.post("/decisions", json=decision())).status == 200
        await sign(client)
        _, size, root = open_checkpoint(await (await client.get("/log/checkpoint")).text(), vkey)
        roots[size] = root
    assert sorted(roots) == list(range(1, 10))
    for first in range(1, 10):
        for second in range(first, 10):
            body = await (await client.get(f"/log/consistency?first={first}&second={second}")).json()
            assert consistency_ok(first, second, roots[first], roots[second], unb64(body["consistency"]))


async def test_proof_errors_are_clear(make_client):
    client = await make_client(checkpoint_interval_s=3600)
    body = decision()
    await client.post("/decisions", json=body)
    # Not in a checkpoint yet: retry shortly.
    response = await client.get(f"/decisions/{body['decision_id']}/proof")
    assert response.status == 503 and response.headers["Retry-After"] == "3600"  # the checkpoint interval
    await sign(client)
    cases = {
        "/decisions/nope/proof": (404, None),
        f"/decisions/{body['decision_id']}/proof?tree_size=7": (404, "tree_size"),
        f"/decisions/{body['decision_id']}/proof?tree_size=x": (400, "tree_size"),
        f"/decisions/{body['decision_id']}/proof?size=1": (400, "size"),
        "/log/consistency?first=1": (400, "second"),
        "/log/consistency?first=2&second=1": (400, "first"),
        "/log/consistency?first=1&second=5": (404, "second"),
    }
    for path, (status, parameter) in cases.items():
        response = await client.get(path)
        error = await response.json()
        assert response.status == status, path
        assert error["status"] == status and error.get("parameter") == parameter, (path, error)


async def test_json_store_and_disabled_log_have_no_proofs(make_client):
    for client in (await make_client("json"), await make_client(audit_log=False)):
        body = decision()
        assert (await client.post("/decisions", json=body)).status == 200
        for path in ("/log/checkpoint", "/log/public-key", f"/decisions/{body['decision_id']}/proof"):
            response = await client.get(path)
            assert response.status == 404 and "no audit log" in (await response.json())["detail"]


async def test_leaf_is_the_canonical_get_response_and_duplicates_add_none(make_client):
    client = await make_client(checkpoint_interval_s=3600)
    body = decision(context={"z": 1.5, "a": [1e21, 2**52, "\u00e9\U0001f600"], "\ue000": None})
    for _ in range(3):
        assert (await client.post("/decisions", json=body)).status == 200
    assert await sign(client) == 1
    response = await client.get(f"/decisions/{body['decision_id']}")
    record = msgspec.json.decode(await response.read())
    assert canonical(await response.read()) == rfc8785.dumps(msgspec.json.decode(await response.read()))
    proof = await (await client.get(f"/decisions/{body['decision_id']}/proof")).json()
    _, _, root = open_checkpoint(proof["checkpoint"], await vkey_of(client))
    assert proof["inclusion"] == [] and leaf_of(record) == root


def test_integers_beyond_doubles_keep_every_digit():
    # RFC 8785 would round these through a double; exact digits keep an edit of the last digit visible.
    assert canonical(b'{"n":1152921504606846977}') == b'{"n":1152921504606846977}'
    assert canonical(b'{"b":1.0,"a":12345678901234567890}') == b'{"a":12345678901234567890,"b":1}'


def finite(data: bytes) -> float:
    value = struct.unpack("<d", data)[0]
    return value if math.isfinite(value) else 0.0


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.binary(min_size=8, max_size=8).map(finite)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_canonical_json_is_rfc8785(value):
    assert canonical(msgspec.json.encode(value)) == rfc8785.dumps(value)


async def test_signing_key_is_made_private_once_and_reused(make_client, tmp_path, caplog):
    import logging
    import stat

    caplog.set_level(logging.INFO, logger="cavra_ingest.auditlog")
    client = await make_client()
    key_file = tmp_path / "activity.db.signing-key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    vkey = await vkey_of(client)
    assert (
        vkey in caplog.text and key_file.read_text().strip().split("+", 4)[4] not in caplog.text
    )  # base64 may hold "+"
    await client.close()
    again = await make_client()
    assert await vkey_of(again) == vkey
    # CAVRA_SIGNING_KEY names another file: another key, and checkpoints it signs.
    await again.close()
    other = await make_client(signing_key=str(tmp_path / "elsewhere" / "key"), checkpoint_interval_s=3600)
    assert await vkey_of(other) != vkey
    await other.post("/decisions", json=decision())
    assert await sign(other) == 1
    open_checkpoint(await (await other.get("/log/checkpoint")).text(), await vkey_of(other))


async def test_a_truncated_log_is_never_signed_and_logged_once(make_client, caplog):
    import sqlite3

    from cavra_ingest.http.keys import RUNTIME_KEY

    client = await make_client(checkpoint_interval_s=3600)
    await client.post("/decisions", json=[decision() for _ in range(3)])
    assert await sign(client) == 3
    conn = sqlite3.connect(client.app[RUNTIME_KEY].settings.store.path)
    with conn:
        conn.execute("DELETE FROM audit_leaves WHERE leaf_index = 2")
    conn.close()
    from cavra_ingest.auditlog.log import CheckpointLoop

    loop = CheckpointLoop(client.app[AUDIT_KEY], 3600)
    assert await loop.step() is None and await loop.step() is None
    assert caplog.text.count("checkpoint failed") == 1 and "fewer than checkpoint 3" in caplog.text
    assert (await client.get("/log/checkpoint")).status == 200
