"""People sign in through a real provider (node oidc-provider) over HTTP: cookie session, tenant, logout, refusal."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from cavra_ingest.http.app import create_app
from cavra_ingest.settings import Settings
from cavra_ingest.store import make_store
from cavra_ingest.store.tokens import SqliteTokens, new_token
from tests.conftest import decision
from tests.oidcprovider import OidcProvider, free_port, sign_in_form

pytestmark = pytest.mark.slow
SECRET = "client-secret-for-tests"
RULES = [
    {"claim": "groups", "value": "cavra-acme-auditors", "tenant": "acme", "scopes": ["read"]},
    {"claim": "groups", "value": "cavra-platform", "scopes": ["admin"]},
]


class World:
    def __init__(self, tmp: Path, **overrides: Any) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.db = tmp / "activity.db"
        client = {
            "client_id": "cavra",
            "client_secret": SECRET,
            "redirect_uris": [self.base + "/auth/callback"],
            "backchannel_logout_uri": self.base + "/auth/backchannel-logout",
            "backchannel_logout_session_required": True,
            "post_logout_redirect_uris": [self.base + "/console/"],
        }
        users = {"alice": {"email": "alice@acme.test", "groups": ["cavra-acme-auditors"]}}
        self.idp = OidcProvider(tmp, [client], users)
        roles = tmp / "roles.json"
        roles.write_text(json.dumps(RULES))
        self.settings = Settings.of(
            activity_db=str(self.db), port=self.port, oidc_issuer=self.idp.issuer, oidc_client_id="cavra",
            oidc_client_secret=SECRET, oidc_roles=str(roles), public_url=self.base, **overrides,
        )  # fmt: skip
        self.ingest = ""

    def jar(self) -> aiohttp.ClientSession:
        # Chromium treats http://127.0.0.1 as a secure origin (Secure cookies kept); so does this client.
        jar = aiohttp.CookieJar(unsafe=True, treat_as_secure_origin=[self.base])
        return aiohttp.ClientSession(cookie_jar=jar)

    async def sign_in(self, http: aiohttp.ClientSession, login: str = "alice") -> aiohttp.ClientResponse:
        async with http.get(self.base + "/auth/login", allow_redirects=False) as reply:
            assert reply.status == 302
            authorize = reply.headers["Location"]
        callback = await sign_in_form(http, authorize, login, self.base + "/auth/callback")
        reply = await http.get(callback, allow_redirects=False)
        await reply.read()
        reply.release()
        self.last_callback = callback
        return reply

    def events(self) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.db) as conn:
            return conn.execute("SELECT kind, outcome, sub, tenant_id FROM access_events ORDER BY id").fetchall()


@pytest.fixture
async def world(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[World]:
    # Settings of the server under test: `@pytest.mark.parametrize("world", [{...}], indirect=True)`.
    w = World(tmp_path, **getattr(request, "param", {}))
    await make_store(w.settings).migrate()
    token, secret = new_token(["ingest", "read"], name="loader")
    await SqliteTokens(w.db).create(token, secret)
    w.ingest = secret
    runner = web.AppRunner(create_app(w.settings), shutdown_timeout=5)
    try:
        w.idp.start()
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", w.port).start()
        async with aiohttp.ClientSession() as http:
            body = [
                decision(tenant_id="acme"),
                decision(tenant_id="acme"),
                decision(tenant_id="globex", session_id="sess-globex"),
            ]
            headers = {"Authorization": "Bearer " + secret}
            async with http.post(w.base + "/decisions?wait=commit", json=body, headers=headers) as reply:
                assert reply.status in (200, 201, 202), await reply.text()
        yield w
    finally:
        await runner.cleanup()
        w.idp.stop()


async def decisions(http: aiohttp.ClientSession, world: World) -> tuple[int, list[str]]:
    async with http.get(world.base + "/decisions?limit=100") as reply:
        if reply.status != 200:
            return reply.status, []
        items = (await reply.json())["items"]
        return 200, sorted({item.get("tenant_id") for item in items})


async def test_sign_in_shows_only_the_mapped_tenant_then_logout_ends_the_session(world: World) -> None:
    async with world.jar() as http:
        assert (await decisions(http, world))[0] == 401  # loopback, yet a provider is configured
        reply = await world.sign_in(http)
        assert reply.status == 302 and reply.headers["Location"] == "/console/"
        cookie = next(v for k, v in reply.headers.items() if k == "Set-Cookie" and v.startswith("cavra_session="))
        assert "HttpOnly" in cookie and "Secure" in cookie and "SameSite=Lax" in cookie
        assert await decisions(http, world) == (200, ["acme"])
        # The same callback again: its state was used.
        async with http.get(world.last_callback, allow_redirects=False) as again:
            assert again.status == 400 and "state" in await again.text()
        # A state-changing request from the cookie session needs its CSRF token.
        async with http.post(world.base + "/auth/logout", allow_redirects=False) as refused:
            assert refused.status == 403
        csrf = next(c.value for c in http.cookie_jar if c.key == "cavra_csrf")
        headers = {"X-CSRF-Token": csrf}
        async with http.post(world.base + "/auth/logout", headers=headers, allow_redirects=False) as out:
            assert out.status == 303 and out.headers["Location"].startswith(world.idp.issuer)
        assert (await decisions(http, world))[0] == 401
    kinds = [(kind, outcome) for kind, outcome, _, _ in world.events()]
    assert kinds == [("sign-in", "failed"), ("sign-in", "ok"), ("sign-out", "ok")] or kinds == [
        ("sign-in", "ok"), ("sign-in", "failed"), ("sign-out", "ok")
    ]  # fmt: skip


async def test_wrong_state_idle_expiry_and_a_removed_group(world: World) -> None:
    async with world.jar() as http:
        async with http.get(world.base + "/auth/callback?state=made-up&code=x") as reply:
            assert reply.status == 400 and "text/html" in reply.headers["Content-Type"]
        assert (await world.sign_in(http)).status == 302
        with sqlite3.connect(world.db) as conn:
            conn.execute("UPDATE signin_sessions SET seen_s = seen_s - 7200")
        assert (await decisions(http, world))[0] == 401
        assert ("session-expired", "ended", "alice", "acme") in world.events()
        world.idp.set_users({"alice": {"email": "alice@acme.test", "groups": ["someone-else"]}})
    async with world.jar() as http:
        reply = await world.sign_in(http)
        assert reply.status == 403
        assert (await decisions(http, world))[0] == 401
    assert ("refusal", "no-role", "alice", None) in world.events()


async def test_a_broken_role_mapping_refuses_sign_in_with_a_503_until_it_is_mended(world: World) -> None:
    roles = Path(world.settings.oidc.oidc_roles)
    roles.write_text("[{not json")
    async with world.jar() as http:
        reply = await world.sign_in(http)
        assert reply.status == 503 and reply.headers["Retry-After"] == "30"
        assert (await decisions(http, world))[0] == 401  # refused, never granted
    # Re-read at each sign-in: mended, the next one goes through without a restart.
    roles.write_text(json.dumps(RULES))
    async with world.jar() as http:
        assert (await world.sign_in(http)).status == 302
        assert await decisions(http, world) == (200, ["acme"])
    assert ("sign-in", "failed", "alice", None) in world.events()


async def test_a_start_with_a_broken_role_mapping_warns_and_still_serves(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    roles = tmp_path / "roles.json"
    roles.write_text("{")
    db = tmp_path / "activity.db"
    settings = Settings.of(activity_db=str(db), oidc_issuer="http://127.0.0.1:9/", oidc_client_id="cavra",
                           oidc_roles=str(roles), public_url="http://127.0.0.1:9")  # fmt: skip
    await make_store(settings).migrate()
    runner = web.AppRunner(create_app(settings), shutdown_timeout=5)
    with caplog.at_level(logging.WARNING, logger="cavra_ingest"):
        await runner.setup()
    try:
        warned = [r.getMessage() for r in caplog.records if "sign-ins will be refused" in r.getMessage()]
        assert warned and "CAVRA_OIDC_ROLES" in warned[0] and str(roles) not in warned[0], caplog.text
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("world", [{"oidc_pending_logins_max": 2}], indirect=True)
async def test_sign_ins_under_way_are_capped_by_their_setting(world: World) -> None:
    async with world.jar() as http:
        for _ in range(2):
            async with http.get(world.base + "/auth/login", allow_redirects=False) as reply:
                assert reply.status == 302
        async with http.get(world.base + "/auth/login", allow_redirects=False) as reply:
            assert reply.status == 503 and "Too many sign-ins" in await reply.text()
            assert reply.headers["Retry-After"] == "30"
    with sqlite3.connect(world.db) as conn:
        assert conn.execute("SELECT count(*) FROM signin_logins").fetchone() == (2,)


@pytest.mark.parametrize("world", [{"oidc_pending_login_s": 90}], indirect=True)
async def test_a_sign_in_under_way_lives_as_long_as_its_setting(world: World) -> None:
    async with world.jar() as http:
        async with http.get(world.base + "/auth/login", allow_redirects=False) as reply:
            assert reply.status == 302
            cookie = reply.headers["Set-Cookie"]
            assert cookie.startswith("cavra_login=") and "Max-Age=90" in cookie
            authorize = reply.headers["Location"]
        callback = await sign_in_form(http, authorize, "alice", world.base + "/auth/callback")
        # Started 91 s ago: one second past its lifetime, the state is stale.
        with sqlite3.connect(world.db) as conn:
            conn.execute("UPDATE signin_logins SET created_s = created_s - 91")
        async with http.get(callback, allow_redirects=False) as reply:
            assert reply.status == 400 and "state" in await reply.text()
        assert (await decisions(http, world))[0] == 401
    async with world.jar() as http:
        # Aged 89 s: still within its lifetime, the sign-in completes.
        async with http.get(world.base + "/auth/login", allow_redirects=False) as reply:
            authorize = reply.headers["Location"]
        callback = await sign_in_form(http, authorize, "alice", world.base + "/auth/callback")
        with sqlite3.connect(world.db) as conn:
            conn.execute("UPDATE signin_logins SET created_s = created_s - 89")
        async with http.get(callback, allow_redirects=False) as reply:
            assert reply.status == 302
        assert await decisions(http, world) == (200, ["acme"])


async def test_back_channel_logout_from_the_provider_ends_the_session(world: World) -> None:
    import asyncio
    import re
    from urllib.parse import urljoin

    async with world.jar() as http:
        assert (await world.sign_in(http)).status == 302
        assert await decisions(http, world) == (200, ["acme"])
        # The person signs out at the provider: it confirms, then POSTs a logout token to our back channel.
        end = world.idp.issuer + "/session/end?client_id=cavra"
        async with http.get(end) as reply:
            page = await reply.text()
        action = re.search(r'<form[^>]*action="([^"]+)"', page)
        assert action is not None, page[:300]
        fields = dict(re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', page))
        fields["logout"] = "yes"
        async with http.post(urljoin(end, action.group(1)), data=fields, allow_redirects=False) as reply:
            assert reply.status in (302, 303), await reply.text()
        deadline = asyncio.get_running_loop().time() + 10
        while (await decisions(http, world))[0] != 401:
            assert asyncio.get_running_loop().time() < deadline, "the back-channel logout never arrived"
            await asyncio.sleep(0.05)
    assert ("backchannel-logout", "ok", "alice", None) in world.events()
    # A made-up logout token is refused with 400, not a 500.
    async with aiohttp.ClientSession() as plain:
        async with plain.post(world.base + "/auth/backchannel-logout", data={"logout_token": "a.b.c"}) as reply:
            assert reply.status == 400


async def test_access_events_are_read_by_admins_a_bound_admin_sees_its_tenant(world: World) -> None:
    async with world.jar() as http:
        assert (await world.sign_in(http)).status == 302
        async with http.get(world.base + "/access-events") as reply:
            assert reply.status == 403  # alice reads acme's records, she is no admin
        world.idp.set_users({"root": {"email": "root@platform.test", "groups": ["cavra-platform"]}})
    async with world.jar() as http:
        assert (await world.sign_in(http, "root")).status == 302
        async with http.get(world.base + "/access-events") as reply:
            assert reply.status == 200
            items = (await reply.json())["items"]
        assert [(e["kind"], e["sub"], e.get("tenant_id")) for e in items[:2]] == [
            ("sign-in", "root", None), ("sign-in", "alice", "acme")
        ]  # fmt: skip
        assert "eyJ" not in str(items)  # no JWT of the provider is ever kept
        async with http.get(world.base + "/openapi.json") as reply:
            paths = (await reply.json())["paths"]
        assert {"/auth/login", "/auth/callback", "/auth/logout", "/auth/backchannel-logout"} <= set(paths)
    token, secret = new_token(["admin"], name="acme-admin", tenant_id="globex")
    await SqliteTokens(world.db).create(token, secret)
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": "Bearer " + secret}
        async with http.get(world.base + "/access-events", headers=headers) as reply:
            assert reply.status == 200 and (await reply.json())["items"] == []


async def test_logout_sends_the_person_through_the_providers_end_session_and_back(world: World) -> None:
    import re
    from urllib.parse import parse_qs, urljoin, urlsplit

    async with world.jar() as http:
        assert (await world.sign_in(http)).status == 302
        csrf = next(c.value for c in http.cookie_jar if c.key == "cavra_csrf")
        # The console's sign-out is a plain form: the CSRF token as a field, not a header.
        async with http.post(world.base + "/auth/logout", data={"csrf_token": "wrong"}, allow_redirects=False) as no:
            assert no.status == 403
        async with http.post(world.base + "/auth/logout", data={"csrf_token": csrf}, allow_redirects=False) as out:
            assert out.status == 303
            target = out.headers["Location"]
        assert target.startswith(world.idp.issuer + "/session/end?")
        query = parse_qs(urlsplit(target).query)
        assert query == {"client_id": ["cavra"], "post_logout_redirect_uri": [world.base + "/console/"]}
        assert (await decisions(http, world))[0] == 401
        # The provider accepts it (client_id instead of id_token_hint), asks to confirm, then sends the person back.
        async with http.get(target) as reply:
            assert reply.status == 200, await reply.text()
            page = await reply.text()
        action = re.search(r'<form[^>]*action="([^"]+)"', page)
        assert action is not None, page[:300]
        fields = dict(re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', page))
        fields["logout"] = "yes"
        async with http.post(urljoin(target, action.group(1)), data=fields, allow_redirects=False) as reply:
            assert reply.status in (302, 303), await reply.text()
            assert reply.headers["Location"] == world.base + "/console/"


async def test_a_callback_served_by_a_second_server_process_on_the_same_store_completes(
    world: World, tmp_path: Path
) -> None:
    from tests.procs import Server

    env = {
        "CAVRA_OIDC_ISSUER": world.idp.issuer, "CAVRA_OIDC_CLIENT_ID": "cavra", "CAVRA_OIDC_CLIENT_SECRET": SECRET,
        "CAVRA_OIDC_ROLES": str(tmp_path / "roles.json"), "CAVRA_PUBLIC_URL": world.base,
    }  # fmt: skip
    second = Server(world.db, env)
    await second.start()
    try:
        async with world.jar() as http:
            async with http.get(world.base + "/auth/login", allow_redirects=False) as reply:
                authorize = reply.headers["Location"]
            callback = await sign_in_form(http, authorize, "alice", world.base + "/auth/callback")
            # Behind a load balancer the callback lands on the other replica (its own memory, the same store).
            elsewhere = callback.replace(world.base, second.url, 1)
            async with http.get(elsewhere, allow_redirects=False) as reply:
                assert reply.status == 302, await reply.text()
                assert reply.headers["Location"] == "/console/"
            # The session is the store's: the first server honours it; the state was used up for both.
            assert await decisions(http, world) == (200, ["acme"])
            async with http.get(callback, allow_redirects=False) as again:
                assert again.status == 400 and "state" in await again.text()
    finally:
        await second.terminate(10)
    assert second.log().count("signed in: sub alice") == 1
