"""Tokens and tenant isolation: every route × every kind of caller, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestClient

from cavra_ingest.http import auth, openapi
from cavra_ingest.http.auth import Bucket, Guard, required_scope
from cavra_ingest.http.keys import AUDIT_KEY, SETTINGS_KEY, STORE_KEY
from cavra_ingest.settings import Settings
from cavra_ingest.store.postgres.store import PostgresStore
from cavra_ingest.store.tokens import Token, new_token, token_store
from tests.auditing import signed_size
from tests.conftest import MakeClient, decision

# Every route the app serves and what it needs; a route missing here (say, added by another branch) fails
# test_every_route_has_an_expected_rule, so nobody adds a route without deciding who may call it.
EXPECTED_SCOPES: dict[tuple[str, str], str | None] = {
    ("POST", "/decisions"): "ingest",
    ("GET", "/ingest/rejections"): "read",
    ("GET", "/decisions"): "read",
    ("GET", "/decisions/facets"): "read",
    ("GET", "/decisions.ndjson"): "read",
    ("GET", "/decisions.csv"): "read",
    ("GET", "/decisions/{decision_id}"): "read",
    ("POST", "/sessions"): "ingest",
    ("GET", "/sessions"): "read",
    ("GET", "/sessions/{session_id}"): "read",
    ("GET", "/sessions/{session_id}/decisions"): "read",
    ("GET", "/console/config"): "read",
    ("GET", "/access-events"): "admin",
    ("GET", "/auth/whoami"): "read",
    ("GET", "/healthz"): None,
    ("GET", "/readyz"): None,
    ("GET", "/metrics"): "read",
    ("GET", "/decisions/{decision_id}/proof"): "read",
    ("GET", "/sessions/{session_id}/evidence"): "read",
    ("GET", "/log/checkpoint"): "read",
    ("GET", "/log/public-key"): "read",
    ("GET", "/log/consistency"): "read",
    ("GET", "/decisions/histogram"): "read",
    ("GET", "/sessions.ndjson"): "read",
    ("GET", "/sessions.csv"): "read",
    ("GET", "/openapi.json"): None,
    ("GET", "/docs"): None,
    ("GET", "/"): None,
    ("GET", "/console"): None,
    ("GET", "/console/"): None,
    ("GET", "/console/static/{name}"): None,
    ("POST", "/sinks"): "admin",
    ("GET", "/sinks"): "admin",
    ("GET", "/sinks/{name}"): "admin",
    ("PATCH", "/sinks/{name}"): "admin",
    ("DELETE", "/sinks/{name}"): "admin",
    ("GET", "/sinks/{name}/dead"): "admin",
    ("POST", "/sinks/{name}/replay"): "admin",
}
ONE, TWO = "ten-one", "ten-two"
FRESH = itertools.count()


def served(client: TestClient) -> set[tuple[str, str]]:
    routes = set()
    for route in client.app.router.routes():
        if route.method != "HEAD" and route.resource is not None:
            routes.add((route.method, route.resource.canonical))
    return routes


@dataclass
class Callers:
    admin: str
    one: str  # tenant one: read + ingest
    two: str  # tenant two: read + ingest
    one_ingest: str
    one_read: str
    expired: str
    revoked: str
    one_admin: str = ""  # tenant one: admin (its own sinks)


async def add_token(client: TestClient, scopes: list[str], tenant: str | None = None, **fields: Any) -> Token:
    token, secret = new_token(scopes, tenant_id=tenant)
    token = msgspec.structs.replace(token, **fields)
    tokens = token_store(client.app[SETTINGS_KEY])
    assert tokens is not None
    await tokens.open()
    try:
        await tokens.create(token, secret)
    finally:
        await tokens.close()
    token.name = secret  # handed back to the test only
    return token


async def secret(client: TestClient, scopes: list[str], tenant: str | None = None, **fields: Any) -> str:
    return (await add_token(client, scopes, tenant, **fields)).name


async def callers(client: TestClient) -> Callers:
    revoked = await add_token(client, ["read", "ingest"], ONE)
    tokens = token_store(client.app[SETTINGS_KEY])
    assert tokens is not None
    await tokens.open()
    try:
        assert await tokens.revoke(revoked.id)
    finally:
        await tokens.close()
    return Callers(
        admin=await secret(client, ["admin"]),
        one=await secret(client, ["read", "ingest"], ONE),
        two=await secret(client, ["read", "ingest"], TWO),
        one_ingest=await secret(client, ["ingest"], ONE),
        one_read=await secret(client, ["read"], ONE),
        expired=await secret(client, ["read", "ingest"], ONE, expires_at="2020-01-01T00:00:00.000000+00:00"),
        revoked=revoked.name,
        one_admin=await secret(client, ["admin"], ONE),
    )


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


@pytest.fixture(params=["sqlite", "postgres"])
async def secured(request: pytest.FixtureRequest, make_client: MakeClient) -> tuple[TestClient, Callers]:
    # No cache: revocation and expiry are checked on the very next request.
    client = await make_client(request.param, auth_cache_s=0.0)
    who = await callers(client)
    seed = [
        decision(decision_id="d-one", session_id="s-one", tenant_id=ONE),
        decision(decision_id="d-two", session_id="s-two", tenant_id=TWO),
    ]
    response = await client.post("/decisions", json=seed, headers=bearer(who.admin))
    assert response.status == 200, await response.text()
    sink = {"name": "s-one", "kind": "webhook", "target": "http://127.0.0.1:9/hook", "tenant_id": ONE}
    response = await client.post("/sinks", json=sink, headers=bearer(who.admin))
    assert response.status == 201, await response.text()
    # Sign now, so the seeded decisions have proofs (the loop would within its interval).
    assert await signed_size(client.app[AUDIT_KEY]) == 2
    return client, who


def request_for(route: tuple[str, str]) -> tuple[str, Any]:
    """A request on tenant one's data for each route: (url, JSON body or None)."""
    method, path = route
    urls = {
        "/decisions/{decision_id}": "/decisions/d-one",
        "/decisions/{decision_id}/proof": "/decisions/d-one/proof",
        "/sessions/{session_id}/evidence": "/sessions/s-one/evidence",
        "/log/consistency": "/log/consistency?first=2&second=2",
        "/sessions/{session_id}": "/sessions/s-one",
        "/sessions/{session_id}/decisions": "/sessions/s-one/decisions",
        "/console/static/{name}": "/console/static/app.js",
        "/sinks/{name}": "/sinks/s-one",
        "/sinks/{name}/dead": "/sinks/s-one/dead",
        "/sinks/{name}/replay": "/sinks/s-one/replay",
    }
    url = urls.get(path, path)
    if method == "GET" and path in {
        "/decisions",
        "/decisions/facets",
        "/decisions.ndjson",
        "/decisions.csv",
        "/decisions/histogram",
        "/sessions",
        "/sessions.ndjson",
        "/sessions.csv",
    }:
        url += f"?tenant_id={ONE}"
    body: Any = None
    if (method, path) == ("POST", "/decisions"):
        body = decision(session_id="s-one", tenant_id=ONE)
    elif (method, path) == ("POST", "/sessions"):
        body = {"session_id": "s-one", "state": "completed", "tenant_id": ONE}
    elif (method, path) == ("POST", "/sinks"):
        body = {"kind": "webhook", "target": "http://127.0.0.1:9/hook", "tenant_id": ONE}
    elif (method, path) == ("PATCH", "/sinks/{name}"):
        body = {"state": "active"}
    return url, body


# What another tenant's token gets for tenant one's data: 404 for a record (existence must not leak), 403 for a
# query or a write naming tenant one; routes that hold no tenant data answer normally.
OTHER_TENANT = {
    "/decisions/{decision_id}": 404,
    "/decisions/{decision_id}/proof": 404,
    "/sessions/{session_id}/evidence": 404,
    # One log over every tenant: its checkpoints and key are the same for all (docs/security.md).
    "/log/checkpoint": 200,
    "/log/public-key": 200,
    "/log/consistency": 200,
    "/sessions/{session_id}": 404,
    "/sessions/{session_id}/decisions": 404,
    "/console/config": 200,
    "/auth/whoami": 200,
    # A listing filtered to the caller's own tenant.
    "/ingest/rejections": 200,
}
# Routes whose success is not a 200.
OK = {("POST", "/sinks"): {201}, ("DELETE", "/sinks/{name}"): {204}}
# Routes whose answer spans every tenant: a bound token is refused even for its own tenant.
UNBOUND_ONLY = {"/metrics"}


async def test_every_route_has_an_expected_rule(client: TestClient) -> None:
    assert served(client) == set(EXPECTED_SCOPES)
    for (method, path), scope in EXPECTED_SCOPES.items():
        assert required_scope(method, path) == scope, (method, path)
    # Default deny: a route nobody listed still needs a token.
    assert required_scope("GET", "/log/checkpoint") == "read"
    assert required_scope("POST", "/log/anything") == "ingest"
    assert required_scope("DELETE", "/decisions/{decision_id}") == "admin"
    assert required_scope("GET", None) == "read"


@pytest.mark.slow
async def test_route_matrix(secured: tuple[TestClient, Callers]) -> None:
    client, who = secured
    checked = 0
    for route, scope in sorted(EXPECTED_SCOPES.items()):
        method, path = route
        url, body = request_for(route)

        async def call(
            token: str | None, url: str = url, body: Any = body, method: str = method, path: str = path
        ) -> Any:
            if body is not None and "decision" in body:
                body = {**body, "decision_id": f"m-{next(FRESH)}"}  # each attempt a new record
            if body is not None and "kind" in body:
                body = {**body, "name": f"m-{next(FRESH)}"}  # each attempt a new sink
            if (method, path) == ("DELETE", "/sinks/{name}"):
                # Each attempt removes a sink of its own.
                name = f"m-{next(FRESH)}"
                sink = {"name": name, "kind": "webhook", "target": "http://127.0.0.1:9/", "tenant_id": ONE}
                assert (await client.post("/sinks", json=sink, headers=bearer(who.admin))).status == 201
                url = f"/sinks/{name}"
            return await client.request(method, url, json=body, headers=bearer(token), allow_redirects=False)

        if scope is None:
            for token in (None, "cavra_unknown", who.expired, who.one):
                response = await call(token)
                assert response.status in (200, 302), (route, response.status)
            continue
        for label, token in (("none", None), ("unknown", "cavra_" + "x" * 43), ("expired", who.expired),
                             ("revoked", who.revoked)):  # fmt: skip
            response = await call(token)
            assert response.status == 401, (route, label, response.status)
            assert response.headers["WWW-Authenticate"].startswith("Bearer"), route
            error = await response.json()
            assert error["status"] == 401 and error["error"] == "unauthorized"
        wrong = who.one_read if scope == "ingest" else who.one_ingest
        response = await call(wrong)
        assert response.status == 403, (route, "wrong scope", response.status)
        response = await call(who.two)
        assert response.status == OTHER_TENANT.get(path, 403), (route, "other tenant", response.status)
        if response.status >= 400:
            text = await response.text()
            assert "d-one" not in text or path == "/decisions", text
        response = await call(who.one_admin if scope == "admin" else who.one)
        expected = 403 if path in UNBOUND_ONLY else 200
        assert response.status in OK.get(route, {expected}), (route, "right token", await response.text())
        response = await call(who.admin)
        assert response.status in OK.get(route, {200}), (route, "admin", await response.text())
        checked += 1
    assert checked == sum(scope is not None for scope in EXPECTED_SCOPES.values())


async def test_bound_token_sees_only_its_tenant(secured: tuple[TestClient, Callers]) -> None:
    client, who = secured
    headers = bearer(who.one)
    listed = await (await client.get("/decisions", headers=headers)).json()
    assert [item["decision_id"] for item in listed["items"]] == ["d-one"] and listed["total"] == 1
    sessions = await (await client.get("/sessions", headers=headers)).json()
    assert [item["session_id"] for item in sessions["items"]] == ["s-one"]
    facets = await (await client.get("/decisions/facets", headers=headers)).json()
    assert facets["total"] == 1
    export = await (await client.get("/decisions.ndjson", headers=headers)).text()
    assert [msgspec.json.decode(line)["tenant_id"] for line in export.splitlines()] == [ONE]
    csv = await (await client.get("/decisions.csv", headers=headers)).text()
    assert "d-two" not in csv and "d-one" in csv
    assert (await client.get("/decisions/d-two", headers=headers)).status == 404
    assert (await client.get("/decisions?tenant_id=ten-two&tenant_id=ten-one", headers=headers)).status == 403
    whoami = await (await client.get("/auth/whoami", headers=headers)).json()
    assert whoami["tenant_id"] == ONE and whoami["authenticated"] is True and who.one not in str(whoami)
    admin = await (await client.get("/decisions", headers=bearer(who.admin))).json()
    assert admin["total"] == 2


@pytest.mark.slow
async def test_writes_are_stamped_and_other_tenants_refused_per_record(secured: tuple[TestClient, Callers]) -> None:
    client, who = secured
    batch = [
        decision(decision_id="w-1", session_id="s-one"),  # no tenant: stamped with the token's
        decision(decision_id="w-2", session_id="s-one", tenant_id=TWO),  # names another tenant
        decision(decision_id="d-two", session_id="s-new", tenant_id=ONE),  # another tenant's decision_id
        decision(decision_id="w-3", session_id="s-two"),  # another tenant's session
    ]
    response = await client.post("/decisions", json=batch, headers=bearer(who.one))
    assert response.status == 207
    reply = await response.json()
    assert [r["status"] for r in reply["results"]] == ["created", "forbidden", "forbidden", "forbidden"]
    assert all(r["error"]["status"] == 403 for r in reply["results"][1:])
    text = await response.text()
    assert TWO not in text.replace('"tenant_id ' + repr(ONE), "")  # nothing of tenant two's records
    stored = await (await client.get("/decisions/w-1", headers=bearer(who.admin))).json()
    assert stored["tenant_id"] == ONE
    before = await (await client.get("/sessions/s-two", headers=bearer(who.admin))).json()
    assert before["decision_count"] == 1
    # A session never moves tenant, not even by an administrator's POST /sessions.
    moved = await client.post("/sessions", json={"session_id": "s-two", "tenant_id": ONE}, headers=bearer(who.admin))
    assert moved.status == 403
    moved = await client.post("/sessions", json={"session_id": "s-two", "state": "failed"}, headers=bearer(who.one))
    assert moved.status == 403
    after = await (await client.get("/sessions/s-two", headers=bearer(who.admin))).json()
    assert after == before
    single = await client.post("/decisions", json=batch[3], headers=bearer(who.one))
    assert single.status == 403 and (await single.json())["error"] == "forbidden"


async def test_no_token_serves_openly_until_one_exists(make_client: MakeClient) -> None:
    client = await make_client("sqlite", auth_cache_s=0.0)
    assert (await client.post("/decisions", json=decision())).status == 200
    whoami = await (await client.get("/auth/whoami")).json()
    assert whoami["authenticated"] is False
    await secret(client, ["read"])
    assert (await client.get("/decisions")).status == 401


async def test_auth_required_without_any_token(make_client: MakeClient) -> None:
    client = await make_client("sqlite", auth="required")
    assert (await client.get("/decisions")).status == 401
    assert (await client.get("/healthz")).status == 200


async def test_json_store_keeps_no_tokens_and_serves_on_loopback(make_client: MakeClient) -> None:
    client = await make_client("json")
    assert (await client.get("/decisions")).status == 200
    problem = await auth.startup_problem(Settings.of(activity_store="x.json", auth="required"))
    assert problem is not None and "JSON store keeps no tokens" in problem


async def test_serving_beyond_loopback_needs_a_token_or_the_insecure_flag(tmp_path, caplog) -> None:
    db = str(tmp_path / "a.db")
    problem = await auth.startup_problem(Settings.of(activity_db=db, host="0.0.0.0"))
    assert problem is not None and "cavra-ingest token create" in problem and "--insecure-no-auth" in problem
    assert await auth.startup_problem(Settings.of(activity_db=db, host="0.0.0.0", insecure_no_auth=True)) is None
    assert "WITHOUT AUTHENTICATION" in caplog.text
    assert await auth.startup_problem(Settings.of(activity_db=db)) is None
    assert "serving without authentication on loopback" in caplog.text


class FakeTokens:
    """A token store answering from memory, counting look-ups."""

    def __init__(self, token: Token) -> None:
        self.token = token
        self.finds = 0

    async def count(self) -> int:
        return 1

    async def find(self, secret: str) -> Token | None:
        self.finds += 1
        return self.token

    async def touch(self, token_id: str) -> None:
        return None


async def test_revocation_takes_effect_once_the_cache_expires() -> None:
    now = [100.0]
    token, _ = new_token(["read"])
    tokens = FakeTokens(token)
    guard = Guard(Settings.of(auth_cache_s=1.0), tokens, clock=lambda: now[0])  # type: ignore[arg-type]
    assert (await guard.authenticate("Bearer s")).token_id == token.id
    tokens.token = msgspec.structs.replace(token, revoked_at="2026-01-01T00:00:00.000000+00:00")
    now[0] += 0.5
    assert (await guard.authenticate("Bearer s")).token_id == token.id  # within the 1 s cache
    now[0] += 0.6
    with pytest.raises(auth.ApiError) as refused:
        await guard.authenticate("Bearer s")
    assert refused.value.status == 401 and tokens.finds == 2


def test_bucket_refills_at_its_rate_and_lets_a_large_batch_run_into_debt() -> None:
    bucket = Bucket(rate=10.0, capacity=10.0, level=10.0, stamp=0.0)
    assert bucket.take(4, 0.0) == 0.0
    assert bucket.take(6, 0.0) == 0.0
    assert bucket.take(1, 0.0) == pytest.approx(0.1)
    assert bucket.take(1, 0.1) == 0.0
    assert bucket.take(50, 1.1) == 0.0  # a full bucket takes a batch beyond its size...
    assert bucket.take(0, 2.0) == pytest.approx(3.2)  # ...and then waits off the debt


async def test_one_tenant_flooding_does_not_starve_another(make_client: MakeClient) -> None:
    client = await make_client("sqlite", queue_max_records=300, auth_cache_s=0.0)
    flooder = await secret(client, ["ingest"], ONE, rate_per_s=20.0)
    other = await secret(client, ["ingest", "read"], TWO)

    async def flood(n: int) -> Any:
        batch = [decision(session_id="flood", decision_id=f"f-{n}-{i}") for i in range(100)]
        return await client.post("/decisions", json=batch, headers=bearer(flooder))

    responses = await asyncio.gather(*(flood(n) for n in range(30)))
    statuses = [r.status for r in responses]
    assert statuses.count(200) <= 2 and statuses.count(429) >= 28
    limited = next(r for r in responses if r.status == 429)
    assert int(limited.headers["Retry-After"]) >= 1 and (await limited.json())["error"] == "too_many_requests"
    mine = await client.post("/decisions", json=[decision(session_id="calm") for _ in range(50)], headers=bearer(other))
    assert mine.status == 200


def test_openapi_marks_protected_operations() -> None:
    for (method, path), operation in openapi.OPERATIONS.items():
        if required_scope(method, path) is None:
            assert "security" not in operation
        else:
            assert operation["security"] and "401" in operation["responses"], (method, path)


async def test_out_of_enum_values_are_looked_up_within_the_callers_tenant(
    secured: tuple[TestClient, Callers],
) -> None:
    """A stray value stored by CAVRA in tenant two's rows is no oracle for tenant one's token."""
    client, who = secured
    store = client.app[STORE_KEY]
    update = "UPDATE activity_decisions SET severity = 'informational' WHERE decision_id = 'd-two'"
    if isinstance(store, PostgresStore):
        await store.pool.execute(update)
    else:
        with sqlite3.connect(client.app[SETTINGS_KEY].store.path) as db:
            db.execute(update)
    for token, status, total in ((who.two, 200, 1), (who.admin, 200, 1), (who.one, 400, None)):
        response = await client.get("/decisions", params={"severity": "informational"}, headers=bearer(token))
        assert response.status == status, await response.text()
        body = await response.json()
        if total is None:
            assert "must be one of" in body["detail"]
        else:
            assert [item["decision_id"] for item in body["items"]] == ["d-two"]
