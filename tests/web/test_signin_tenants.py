"""Cookie sessions get the same tenant isolation proofs as tokens, on every route the app serves.

People sign in through the real provider (node oidc-provider) and the real sign-in routes, so each cookie is one
the server really issued. Then: the route matrix of test_auth.py (every route × a session without one, of the
wrong scope, of another tenant, of the right tenant; state-changing routes without their CSRF token), the
property test of test_tenant_properties.py with cookie sessions as the readers, and, once a provider is
configured, no record-holding route answers without a session or a token, loopback and no token at all included.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from cavra_ingest.http.app import create_app
from cavra_ingest.http.keys import AUDIT_KEY
from cavra_ingest.settings import Settings
from cavra_ingest.store import make_store
from cavra_ingest.store.tokens import SqliteTokens, new_token
from tests.auditing import signed_size
from tests.conftest import decision
from tests.oidcprovider import OidcProvider, free_port, sign_in_form
from tests.web.test_auth import EXPECTED_SCOPES, FRESH, OK, ONE, OTHER_TENANT, TWO, UNBOUND_ONLY, request_for
from tests.web.test_tenant_properties import TENANTS, Fetch, examples, isolation_holds

pytestmark = pytest.mark.slow
SECRET = "client-secret-for-tests"
SIGNIN_ROUTES = {
    ("GET", "/auth/login"),
    ("GET", "/auth/callback"),
    ("POST", "/auth/logout"),
    ("POST", "/auth/backchannel-logout"),
}
# One person per (tenant, role): the group names the rule, the rule the tenant and scopes.
ROLES = {"read": ["read"], "ingest": ["ingest"], "write": ["read", "ingest"], "admin": ["admin"]}
PEOPLE = {f"{tenant}.{role}": (tenant, scopes) for tenant in (ONE, TWO) for role, scopes in ROLES.items()}
PEOPLE.update({f"{tenant}.read": (tenant, ["read"]) for tenant in TENANTS})  # the property test's readers
RULES = [{"claim": "groups", "value": f"g-{login}", "tenant": tenant, "scopes": scopes}
         for login, (tenant, scopes) in PEOPLE.items()]  # fmt: skip
RULES.append({"claim": "groups", "value": "g-root", "scopes": ["admin"]})

# test_auth.py's other-tenant caller has no admin scope; here tenant two's admin asks for tenant one's sinks and
# events: another tenant's sink looks absent, a listing holds its own tenant's only (checked below).
OTHER_TENANT_ADMIN = {
    ("GET", "/sinks"): 200,
    ("GET", "/sinks/{name}"): 404,
    ("PATCH", "/sinks/{name}"): 404,
    ("DELETE", "/sinks/{name}"): 404,
    ("GET", "/sinks/{name}/dead"): 404,
    ("POST", "/sinks/{name}/replay"): 404,
    ("GET", "/access-events"): 200,
}


@dataclass
class Person:
    """A signed-in browser: its cookie jar holds the session cookie and the CSRF cookie the server set."""

    http: aiohttp.ClientSession
    csrf: str


@dataclass
class Tenancy:
    base: str
    app: web.Application
    admin_token: str
    people: dict[str, Person] = field(default_factory=dict)

    async def call(
        self, who: str | None, method: str, url: str, body: Any = None, *, csrf: bool = True
    ) -> tuple[int, dict[str, str], bytes]:
        """A request as `who`'s browser (None: no cookie at all); state-changing ones carry its CSRF token."""
        headers = {}
        if who is not None and csrf and method not in ("GET", "HEAD"):
            headers["X-CSRF-Token"] = self.people[who].csrf
        if who is None:
            async with aiohttp.ClientSession() as anonymous:
                return await send(anonymous, method, self.base + url, body, headers)
        return await send(self.people[who].http, method, self.base + url, body, headers)

    def fetch(self, who: str) -> Fetch:
        async def get(url: str) -> tuple[int, bytes]:
            status, _, body = await self.call(who, "GET", url)
            return status, body

        return get


async def send(
    http: aiohttp.ClientSession, method: str, url: str, body: Any, headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    async with http.request(method, url, json=body, headers=headers, allow_redirects=False) as reply:
        return reply.status, dict(reply.headers), await reply.read()


async def serve(tmp: Path, idp: OidcProvider, port: int) -> web.AppRunner:
    roles = tmp / "roles.json"
    roles.write_text(json.dumps(RULES))
    settings = Settings.of(
        activity_db=str(tmp / "activity.db"), port=port, oidc_issuer=idp.issuer, oidc_client_id="cavra",
        oidc_client_secret=SECRET, oidc_roles=str(roles), public_url=f"http://127.0.0.1:{port}", auth_cache_s=0.0,
    )  # fmt: skip
    await make_store(settings).migrate()
    runner = web.AppRunner(create_app(settings), shutdown_timeout=5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


def provider(tmp: Path, port: int) -> OidcProvider:
    base = f"http://127.0.0.1:{port}"
    client = {"client_id": "cavra", "client_secret": SECRET, "redirect_uris": [base + "/auth/callback"]}
    users = {login: {"email": f"{login}@test", "groups": [f"g-{login}"]} for login in PEOPLE}
    users["root"] = {"email": "root@test", "groups": ["g-root"]}
    return OidcProvider(tmp, [client], users)


async def sign_in(base: str, login: str) -> Person:
    # Chromium treats http://127.0.0.1 as a secure origin (Secure cookies kept); so does this client.
    http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True, treat_as_secure_origin=[base]))
    async with http.get(base + "/auth/login", allow_redirects=False) as reply:
        assert reply.status == 302
        authorize = reply.headers["Location"]
    callback = await sign_in_form(http, authorize, login, base + "/auth/callback")
    async with http.get(callback, allow_redirects=False) as reply:
        assert reply.status == 302, await reply.text()
    cookies = {cookie.key: cookie.value for cookie in http.cookie_jar}
    assert "cavra_session" in cookies, cookies
    return Person(http, cookies["cavra_csrf"])


@pytest.fixture
async def tenancy(tmp_path: Path) -> AsyncIterator[Tenancy]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    idp = provider(tmp_path, port)
    runner = None
    world = None
    try:
        idp.start()
        runner = await serve(tmp_path, idp, port)
        token, admin = new_token(["admin"], name="loader")
        await SqliteTokens(tmp_path / "activity.db").create(token, admin)
        world = Tenancy(base, runner.app, admin)
        for login in [*PEOPLE, "root"]:
            world.people[login] = await sign_in(base, login)
        yield world
    finally:
        if world is not None:
            for person in world.people.values():
                await person.http.close()
        if runner is not None:
            await runner.cleanup()
        idp.stop()


async def seed(world: Tenancy) -> None:
    """Tenant one's and two's records, a sink each, and a checkpoint (so proofs exist): as the platform admin."""
    records = [
        decision(decision_id="d-one", session_id="s-one", tenant_id=ONE),
        decision(decision_id="d-two", session_id="s-two", tenant_id=TWO),
    ]
    assert (await world.call("root", "POST", "/decisions", records))[0] == 200
    for name, tenant in (("s-one", ONE), ("s-two", TWO)):
        sink = {"name": name, "kind": "webhook", "target": "http://127.0.0.1:9/hook", "tenant_id": tenant}
        assert (await world.call("root", "POST", "/sinks", sink))[0] == 201
    assert await signed_size(world.app[AUDIT_KEY]) == 2


def served(app: web.Application) -> set[tuple[str, str]]:
    return {(r.method, r.resource.canonical) for r in app.router.routes() if r.method != "HEAD" and r.resource}


async def test_every_route_holds_for_cookie_sessions_as_for_tokens(tenancy: Tenancy) -> None:
    world = tenancy
    await seed(world)
    routes = served(world.app)
    # A route nobody listed in test_auth.EXPECTED_SCOPES fails here by name: it joins both matrices once listed.
    assert routes - SIGNIN_ROUTES - set(EXPECTED_SCOPES) == set(), "routes with no rule"
    assert set(EXPECTED_SCOPES) - routes == set(), "rules for routes the app no longer serves"
    checked = 0
    for route, scope in sorted(EXPECTED_SCOPES.items()):
        method, path = route
        url, body = request_for(route)

        async def call(who: str | None, *, csrf: bool = True, url: str = url, body: Any = body,
                       method: str = method, path: str = path) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
            if body is not None and "decision" in body:
                body = {**body, "decision_id": f"m-{next(FRESH)}"}  # each attempt a new record
            if body is not None and "kind" in body:
                body = {**body, "name": f"m-{next(FRESH)}"}  # each attempt a new sink
            if (method, path) == ("DELETE", "/sinks/{name}"):
                name = f"m-{next(FRESH)}"  # each attempt removes a sink of its own
                sink = {"name": name, "kind": "webhook", "target": "http://127.0.0.1:9/", "tenant_id": ONE}
                assert (await world.call("root", "POST", "/sinks", sink))[0] == 201
                url = f"/sinks/{name}"
            return await world.call(who, method, url, body, csrf=csrf)

        if scope is None:
            for who in (None, f"{ONE}.read", f"{TWO}.admin"):
                assert (await call(who))[0] in (200, 302), (route, who)
            continue
        # No cookie: a 401 naming the sign-in route, loopback or not.
        status, headers, _ = await call(None)
        assert status == 401 and headers.get("X-Cavra-Sign-In") == "/auth/login", (route, status)
        # A session lacking the scope.
        wrong = f"{ONE}.read" if scope == "ingest" else f"{ONE}.ingest"
        assert (await call(wrong))[0] == 403, (route, "wrong scope")
        # Tenant two's session, with the route's scope, on tenant one's records.
        other = f"{TWO}.admin" if scope == "admin" else f"{TWO}.write"
        status, _, text = await call(other)
        want = OTHER_TENANT_ADMIN.get(route, 403) if scope == "admin" else OTHER_TENANT.get(path, 403)
        assert status == want, (route, "other tenant", status)
        if status >= 400 or scope == "admin":
            assert b"d-one" not in text and b"s-one" not in text or path == "/decisions", (route, text)
        mine = f"{ONE}.admin" if scope == "admin" else f"{ONE}.write"
        if method != "GET":
            # A state-changing request from a cookie session without its CSRF token is refused before it runs.
            for who in (mine, "root"):
                status, _, text = await call(who, csrf=False)
                assert status == 403 and b"CSRF" in text, (route, who, "no CSRF", status)
        status, _, text = await call(mine)
        expected = 403 if path in UNBOUND_ONLY else 200
        assert status in OK.get(route, {expected}), (route, "own tenant", status, text[:300])
        status, _, text = await call("root")
        assert status in OK.get(route, {200}), (route, "platform admin", status, text[:300])
        checked += 1
    assert checked == sum(scope is not None for scope in EXPECTED_SCOPES.values())

    # Nothing a CSRF-less write tried was stored: only the seeded decisions and those sent with the token.
    status, _, body = await world.call("root", "GET", "/decisions?limit=500")
    stored = json.loads(body)["items"]
    assert status == 200 and len(stored) == 2 + 2 and {"d-one", "d-two"} <= {item["decision_id"] for item in stored}
    # A tenant's admin reads its own tenant's sinks and access events only.
    status, _, body = await world.call(f"{ONE}.admin", "GET", "/sinks")
    assert status == 200 and {sink["tenant_id"] for sink in json.loads(body)["items"]} == {ONE}
    status, _, body = await world.call(f"{ONE}.admin", "GET", "/access-events?limit=500")
    events = json.loads(body)["items"]
    assert status == 200 and events and {event["tenant_id"] for event in events} == {ONE}
    status, _, body = await world.call("root", "GET", "/access-events?limit=500")
    assert status == 200 and {ONE, TWO} <= {event.get("tenant_id") for event in json.loads(body)["items"]}


async def test_no_cookie_session_sees_another_tenants_records_whatever_the_records_and_filters(
    tenancy: Tenancy,
) -> None:
    world = tenancy
    for records, filters, tenant in examples(25):
        if records:
            status, _, text = await world.call("root", "POST", "/decisions", records)
            assert status == 200, text
        await isolation_holds(world.fetch(f"{tenant}.read"), world.fetch("root"), records, filters, tenant)


async def test_with_a_provider_configured_no_record_is_readable_without_a_session_even_with_no_token(
    tmp_path: Path,
) -> None:
    port = free_port()
    idp = provider(tmp_path, port)
    runner = None
    root = None
    try:
        idp.start()
        runner = await serve(tmp_path, idp, port)  # on loopback, and no token exists at all
        base = f"http://127.0.0.1:{port}"
        root = await sign_in(base, "root")
        world = Tenancy(base, runner.app, "", {"root": root})
        await seed(world)
        checked = 0
        for route, scope in sorted(EXPECTED_SCOPES.items()):
            url, body = request_for(route)
            for cookie in (None, "made-up"):
                async with aiohttp.ClientSession(cookies={"cavra_session": cookie} if cookie else None) as http:
                    status, headers, text = await send(http, route[0], base + url, body, {})
                if scope is None:
                    assert status in (200, 302), (route, status)
                    continue
                assert status == 401 and headers.get("X-Cavra-Sign-In") == "/auth/login", (route, cookie, status)
                assert b"d-one" not in text and b"s-one" not in text, (route, text)
                checked += 1
        assert checked == 2 * sum(scope is not None for scope in EXPECTED_SCOPES.values())
        # The records were there all along, for a signed-in person.
        status, _, body = await world.call("root", "GET", "/decisions")
        assert status == 200 and json.loads(body)["total"] == 2
    finally:
        if root is not None:
            await root.http.close()
        if runner is not None:
            await runner.cleanup()
        idp.stop()
