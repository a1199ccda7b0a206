"""Evidence bundles: a session's records with inclusion proofs, a signed checkpoint and a signed manifest,
checked offline with no database and no network."""

from __future__ import annotations

import base64

import msgspec
from aiohttp import web

from cavra_ingest.auditlog.evidence import FORMAT, manifest_text
from cavra_ingest.auditlog.log import AuditLog, Memo
from cavra_ingest.auditlog.notes import b64
from cavra_ingest.auditlog.tables import record_leaf
from cavra_ingest.core.errors import ApiError
from cavra_ingest.http.auth import visible_payload
from cavra_ingest.http.keys import STORE_KEY
from cavra_ingest.http.middleware import json_reply
from cavra_ingest.http.replies import Evidence, EvidenceRecord
from cavra_ingest.http.routes.proofs import audit_of, only
from cavra_ingest.http.routes.reads import stored_id
from cavra_ingest.store import ListQuery, Store

CHUNK = 1000


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
