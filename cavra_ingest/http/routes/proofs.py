"""Audit-log routes: the latest signed checkpoint, the verifier key, inclusion and consistency proofs."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from cavra_ingest.auditlog.log import AuditLog
from cavra_ingest.auditlog.notes import b64
from cavra_ingest.core.errors import ApiError
from cavra_ingest.http.auth import visible_payload
from cavra_ingest.http.keys import AUDIT_KEY, SETTINGS_KEY, STORE_KEY
from cavra_ingest.http.middleware import json_reply
from cavra_ingest.http.replies import ConsistencyProof, InclusionProof
from cavra_ingest.http.routes.reads import integer, stored_id


def audit_of(request: web.Request) -> AuditLog:
    audit = request.app.get(AUDIT_KEY)
    if audit is None:
        raise ApiError(404, "this store keeps no audit log (the JSON store, or CAVRA_AUDIT_LOG=0)")
    return audit


def only(params: Mapping[str, str], *names: str) -> None:
    for name in params:
        if name not in names:
            raise ApiError(400, f"unknown query parameter {name!r}", parameter=name)


def size_param(params: Mapping[str, str], name: str) -> int | None:
    if params.get(name, "") == "":
        return None
    value = integer(params, name, 0)
    if value < 0:
        raise ApiError(400, f"{name} must be at least 0", parameter=name)
    return value


async def signed(audit: AuditLog, size: int | None, parameter: str) -> tuple[int, str]:
    """The latest signed checkpoint, or the one of `size`: 404 when no checkpoint has that size."""
    found = await audit.checkpoint(size)
    if found is None:
        if size is None:
            raise ApiError(503, "no checkpoint signed yet", retry_after=1)
        raise ApiError(404, f"no signed checkpoint of size {size}", parameter=parameter)
    return found


async def checkpoint(request: web.Request) -> web.Response:
    only(request.query)
    _, note = await signed(audit_of(request), None, "")
    return web.Response(text=note, content_type="text/plain")


async def public_key(request: web.Request) -> web.Response:
    only(request.query)
    return web.Response(text=audit_of(request).signer.verifier.text(), content_type="text/plain")


async def decision_proof(request: web.Request) -> web.Response:
    # The decision is read through the store first, and a miss is a 404 here only: tenant isolation hooks in
    # at this one read, so another tenant's decision looks absent.
    decision_id = stored_id(request, "decision_id")
    body = None if decision_id is None else await request.app[STORE_KEY].get_decision(decision_id)
    if body is None or decision_id is None or not visible_payload(request, body):
        raise ApiError(404, "decision not found")
    only(request.query, "tree_size")
    audit = audit_of(request)
    wanted = size_param(request.query, "tree_size")
    index = await audit.leaf_index(decision_id)
    if index is None and await audit.db.queued(decision_id):
        retry = max(1, round(request.app[SETTINGS_KEY].audit.checkpoint_interval_s))
        raise ApiError(503, "decision is committed but not sequenced into the audit log yet", retry_after=retry)
    if index is None:
        raise ApiError(404, "decision is not in the audit log (stored before it existed, or by another program)")
    size, note = await signed(audit, wanted, "tree_size")
    if index >= size:
        if wanted is not None:
            raise ApiError(400, f"leaf {index} is not in the tree of size {size}", parameter="tree_size")
        retry = max(1, round(request.app[SETTINGS_KEY].audit.checkpoint_interval_s))
        raise ApiError(503, "decision is not in a signed checkpoint yet", retry_after=retry)
    path = await audit.inclusion(index, size)
    return json_reply(InclusionProof(index, size, [b64(h) for h in path], note))


async def consistency(request: web.Request) -> web.Response:
    only(request.query, "first", "second")
    audit = audit_of(request)
    first, second = size_param(request.query, "first"), size_param(request.query, "second")
    for name, value in (("first", first), ("second", second)):
        if value is None:
            raise ApiError(400, f"{name} is required", parameter=name)
    assert first is not None and second is not None
    if first < 1 or first > second:
        raise ApiError(400, "need 1 <= first <= second", parameter="first")
    await signed(audit, first, "first")
    await signed(audit, second, "second")
    path = await audit.consistency(first, second)
    return json_reply(ConsistencyProof(first, second, [b64(h) for h in path]))
