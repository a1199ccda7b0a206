"""Evidence bundles: a session's records with inclusion proofs, a signed checkpoint and a signed manifest,
checked offline with no database and no network."""

from __future__ import annotations

import base64
from typing import Any

import msgspec
from aiohttp import web

from cavra_ingest.auditlog import merkle
from cavra_ingest.auditlog.log import AuditLog, Memo
from cavra_ingest.auditlog.notes import Verifier, b64, parse_checkpoint
from cavra_ingest.auditlog.tables import record_leaf
from cavra_ingest.core.errors import ApiError
from cavra_ingest.http.auth import visible_payload
from cavra_ingest.http.keys import STORE_KEY
from cavra_ingest.http.middleware import json_reply
from cavra_ingest.http.replies import Evidence, EvidenceRecord
from cavra_ingest.http.routes.proofs import audit_of, only
from cavra_ingest.http.routes.reads import stored_id
from cavra_ingest.store import ListQuery, Store

FORMAT = "cavra-evidence/1"
MANIFEST_HEADER = "cavra-ingest evidence/1"
CHUNK = 1000


def manifest_text(origin: str, session_id: str, size: int, leaves: list[tuple[int, bytes, str]]) -> str:
    """The signed list of a session's leaves: a record removed from or added to the bundle shows against it."""
    lines = [MANIFEST_HEADER, origin, str(size), b64(session_id.encode())]
    lines += [f"{index} {b64(leaf)} {b64(decision_id.encode())}" for index, leaf, decision_id in leaves]
    return "\n".join(lines) + "\n"


async def build(store: Store, audit: AuditLog, session_id: str) -> Evidence | None:
    """Collect the session's records (as stored), proofs against the latest checkpoint, and sign the manifest."""
    if await store.get_session(session_id) is None:
        return None
    latest = await audit.checkpoint()
    size, note = latest if latest is not None else (0, "")
    records: list[EvidenceRecord] = []
    listed: list[tuple[int, bytes, str]] = []
    outside: list[str] = []
    memo = Memo()
    query = ListQuery(equals=(("session_id", (session_id,)),), oldest_first=True)
    async for chunk in store.iter_decisions(query, CHUNK):
        for payload in chunk:
            decision_id = msgspec.json.decode(payload)["decision_id"]
            index = await audit.leaf_index(decision_id)
            if index is None or index >= size:
                outside.append(decision_id)
                continue
            path = [b64(h) for h in await audit.inclusion(index, size, memo)]
            records.append(EvidenceRecord(index, msgspec.Raw(payload), path))
            listed.append((index, record_leaf(payload), decision_id))
    manifest = audit.signer.sign(manifest_text(audit.origin, session_id, size, listed))
    public_key = audit.signer.verifier.text()
    return Evidence(FORMAT, session_id, public_key, note, size, manifest, records, outside)


async def session_evidence(request: web.Request) -> web.Response:
    session_id = stored_id(request, "session_id")
    only(request.query)
    audit = audit_of(request)
    summary = None if session_id is None else await request.app[STORE_KEY].get_session(session_id)
    if summary is None or not visible_payload(request, summary):
        # Another tenant's session looks absent, as on every read route.
        raise ApiError(404, "session not found")
    bundle = None if session_id is None else await build(request.app[STORE_KEY], audit, session_id)
    if bundle is None:
        raise ApiError(404, "session not found")
    filename = f"evidence-{base64.urlsafe_b64encode((session_id or '').encode()).decode()[:40]}.json"
    return json_reply(bundle, headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def verify(bundle: dict[str, Any], public_key: str | None = None) -> tuple[list[str], list[str]]:
    """Check a bundle offline; return (problems naming each edited, removed or added record, notes)."""
    notes: list[str] = []
    if bundle.get("format") != FORMAT:
        return [f"not a {FORMAT} bundle"], notes
    if public_key is None:
        public_key = bundle["public_key"]
        notes.append("checked with the key inside the bundle: pass --public-key to check it against yours")
    verifier = Verifier.parse(public_key)
    try:
        origin, size, root_hash = parse_checkpoint(verifier.open(bundle["checkpoint"]))
        manifest = verifier.open(bundle["manifest"]).split("\n")
    except ValueError as exc:
        return [f"checkpoint or manifest: {exc}"], notes
    if size != bundle.get("tree_size") or manifest[:3] != [MANIFEST_HEADER, origin, str(size)]:
        return ["the manifest was signed for another log, size or bundle"], notes
    if base64.b64decode(manifest[3]).decode() != bundle.get("session_id"):
        return ["the manifest was signed for another session"], notes
    expected: dict[int, tuple[bytes, str]] = {}
    for line in manifest[4:-1]:
        at, hashed, named = line.split(" ")
        expected[int(at)] = (base64.b64decode(hashed), base64.b64decode(named).decode())
    problems: list[str] = []
    seen: set[int] = set()
    for entry in bundle.get("records", []):
        record = entry["record"]
        decision_id = record.get("decision_id") if isinstance(record, dict) else None
        index = entry["leaf_index"]
        leaf = record_leaf(msgspec.json.encode(record))
        path = [base64.b64decode(h) for h in entry["inclusion"]]
        if index not in expected or index in seen:
            problems.append(f"decision {decision_id} (leaf {index}) was added: the signed manifest lists no such leaf")
        elif not merkle.verify_inclusion(leaf, index, size, path, root_hash) or expected[index][0] != leaf:
            problems.append(f"decision {decision_id} (leaf {index}) was edited: it is not the record the log holds")
        seen.add(index)
    for index, (_, decision_id) in sorted(expected.items()):
        if index not in seen:
            problems.append(f"decision {decision_id} (leaf {index}) was removed from the bundle")
    notes.append(f"{len(bundle.get('records', []))} record(s) checked against checkpoint {size}")
    return problems, notes
