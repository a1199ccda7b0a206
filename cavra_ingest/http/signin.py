"""People's sign-in with OpenID Connect: /auth/login, /auth/callback, /auth/logout, /auth/backchannel-logout.

Registered only when CAVRA_OIDC_ISSUER is set. After the code exchange the server keeps its own session (store/
signin.py): an opaque cookie stored hashed; the provider's tokens are dropped. Each failure is an HTML page with
its status and a log line with its reason, never a token. The claims → roles rules are re-read at each sign-in.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from cavra_ingest.http.auth import Principal, unauthorized
from cavra_ingest.http.keys import ACCESS_KEY, SETTINGS_KEY, SIGNIN_KEY
from cavra_ingest.http.oidc import Provider, SignInError, b64, pkce_challenge
from cavra_ingest.store.signin import AccessEvent, Signins, SigninSession, digest

log = logging.getLogger(__name__)
LOGIN_COOKIE = "cavra_login"
CSRF_COOKIE = "cavra_csrf"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
ROLE_SCOPES = frozenset({"read", "ingest", "admin"})


@dataclass(frozen=True)
class Binding:
    tenant_id: str | None
    workspace_id: str | None
    scopes: tuple[str, ...]


def load_rules(path: str) -> list[dict[str, Any]]:
    """Read the rule list; a broken file refuses sign-in (never grants) with a 503 until an operator mends it."""
    try:
        rules = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise SignInError(f"the role mapping (CAVRA_OIDC_ROLES) cannot be read ({type(exc).__name__})", 503) from None
    if not isinstance(rules, list) or not all(isinstance(rule, dict) for rule in rules):
        raise SignInError("the role mapping (CAVRA_OIDC_ROLES) must be a JSON list of rules", 503)
    return rules


def match_roles(claims: dict[str, Any], rules: list[dict[str, Any]]) -> Binding | None:
    """The first rule whose claim holds the value: its tenant (None: unbound), workspace and scopes."""
    for rule in rules:
        value = claims.get(str(rule.get("claim", "")))
        held = value if isinstance(value, list) else [value]
        if rule.get("value") in held:
            scopes = tuple(scope for scope in rule.get("scopes", ["read"]) if scope in ROLE_SCOPES)
            if scopes:
                return Binding(rule.get("tenant"), rule.get("workspace"), scopes)
    return None


@dataclass
class SignIn:
    """The app's sign-in state: the provider and the store (sessions, sign-ins under way, access events)."""

    provider: Provider
    store: Signins

    @property
    def secure(self) -> bool:
        return self.provider.settings.public_url.startswith("https://")

    @property
    def cookie_name(self) -> str:
        return "__Host-cavra_session" if self.secure else "cavra_session"

    async def session_of(self, request: web.Request, csrf: str | None = None) -> SigninSession | None:
        """The live session the request's cookie names (idle and absolute lifetimes applied), else None.

        A state-changing request must carry the session's CSRF token: the X-CSRF-Token header, or `csrf`.
        """
        cookie = request.cookies.get(self.cookie_name)
        if not cookie:
            return None
        session = await self.store.find(cookie)
        if session is None:
            return None
        now, settings = time.time(), self.provider.settings
        if now - session.seen_s > settings.session_idle_s or now - session.created_s > settings.session_absolute_s:
            if await self.store.end(cookie, now, "expired"):
                await self.audit(request, "session-expired", "ended", session.sub, session.email, session.tenant_id)
            return None
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            given = request.headers.get(CSRF_HEADER) or csrf or ""
            if not given or not secrets.compare_digest(digest(given), session.csrf_hash):
                raise web.HTTPForbidden(text='{"detail": "a CSRF token is required (X-CSRF-Token)"}',
                                        content_type="application/json")  # fmt: skip
        await self.store.seen(cookie, now)
        return session

    async def principal(self, request: web.Request) -> Principal:
        """The cookie session's principal: a bound token's tenant enforcement, scopes from the role mapping."""
        session = await self.session_of(request)
        if session is None:
            error = unauthorized("sign in at /auth/login, or send `Authorization: Bearer <token>`")
            error.headers["X-Cavra-Sign-In"] = "/auth/login"  # the console offers "Sign in with …" on this
            raise error
        return Principal(None, frozenset(session.scopes), session.tenant_id, session.workspace_id,
                         f"session of {session.sub}", person=session.email or session.sub)  # fmt: skip

    async def audit(
        self, request: web.Request, kind: str, outcome: str, sub: str | None = None, email: str | None = None,
        tenant: str | None = None, detail: str | None = None,
    ) -> None:  # fmt: skip
        event = AccessEvent(kind, outcome, sub=sub, email=email, remote=request.remote, tenant_id=tenant,
                            detail=detail)  # fmt: skip
        try:
            await self.store.record(event)
        except Exception as exc:  # the event is also logged; a store failure must not turn into a 500 here
            log.error("could not store access event %s: %s", kind, type(exc).__name__)


SIGNIN_RETRY_AFTER_S = 30


def page(status: int, title: str, text: str) -> web.Response:
    body = (
        "<!doctype html><html><head><meta charset=utf-8><title>cavra-ingest: sign-in</title></head><body>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(text)}</p><p><a href=/auth/login>Sign in again</a></p>"
        "</body></html>"
    )
    # A 503 is the server's to mend (the provider unreachable, the role mapping broken): ask again later.
    headers = {"Retry-After": str(SIGNIN_RETRY_AFTER_S)} if status == 503 else None
    return web.Response(status=status, text=body, content_type="text/html", headers=headers)


NO_STORE = {"Cache-Control": "no-store"}


def redirect(status: int, url: str) -> web.Response:
    return web.Response(status=status, headers={"Location": url, **NO_STORE})


async def login(request: web.Request) -> web.StreamResponse:
    signin = request.app[SIGNIN_KEY]
    # The state goes to the provider and back in URLs; the binding stays in this browser's cookie. The store
    # keeps their hashes only, so any replica (or a restarted server) completes the sign-in.
    state, binding = secrets.token_urlsafe(24), secrets.token_urlsafe(32)
    nonce, verifier = login_secrets(binding)
    try:
        url = await signin.provider.authorize_url(state, nonce, pkce_challenge(verifier))
    except SignInError as exc:
        log.warning("sign-in failed: %s", exc.reason)
        return page(exc.status, "The identity provider cannot be reached", exc.reason)
    limits = signin.provider.settings
    ttl_s, most = limits.oidc_pending_login_s, limits.oidc_pending_logins_max
    if not await signin.store.begin_login(state, binding, time.time(), ttl_s, most):
        return page(503, "Too many sign-ins at once", "Try again in a minute.")
    reply = redirect(302, url)
    reply.set_cookie(LOGIN_COOKIE, binding, max_age=ttl_s, httponly=True, secure=signin.secure,
                     samesite="Lax", path="/auth/callback")  # fmt: skip
    return reply


def login_secrets(binding: str) -> tuple[str, str]:
    """The nonce and PKCE verifier of a sign-in, derived from its login cookie (kept by the browser alone)."""
    key = binding.encode()
    nonce = hmac.new(key, b"cavra oidc nonce", hashlib.sha256).digest()
    verifier = hmac.new(key, b"cavra oidc pkce verifier", hashlib.sha256).digest()
    return b64(nonce), b64(verifier)  # 43 characters: RFC 7636's shortest verifier


async def callback(request: web.Request) -> web.StreamResponse:
    signin = request.app[SIGNIN_KEY]
    sub = email = None
    try:
        if "error" in request.query:
            raise SignInError(f"the identity provider refused the sign-in ({request.query['error'][:100]})", 401)
        state = request.query.get("state", "")
        code = request.query.get("code", "")
        ttl_s = signin.provider.settings.oidc_pending_login_s
        binding_hash = await signin.store.take_login(state, time.time(), ttl_s) if state else None
        login_cookie = request.cookies.get(LOGIN_COOKIE, "")
        if binding_hash is None or not secrets.compare_digest(digest(login_cookie), binding_hash):
            raise SignInError("the sign-in's state is unknown, used or from another browser")
        if not code:
            raise SignInError("the provider sent no code")
        nonce, verifier = login_secrets(login_cookie)
        tokens = await signin.provider.exchange(code, verifier)
        claims = await signin.provider.id_token(tokens["id_token"], nonce, tokens.get("access_token"))
        sub, email = str(claims["sub"]), claims.get("email")
        binding = match_roles(claims, load_rules(signin.provider.settings.oidc_roles))
        if binding is None:
            await signin.audit(request, "refusal", "no-role", sub, email, detail="no rule matches the claims")
            log.warning("sign-in refused: no role rule matches the claims of sub %s", sub)
            return page(403, "Access refused",
                        "You signed in, but none of your groups or claims gives access to cavra-ingest. "
                        "Ask an administrator to add you to a group the role mapping names.")  # fmt: skip
    except SignInError as exc:
        log.warning("sign-in failed: %s", exc.reason)
        await signin.audit(request, "sign-in", "failed", sub, email, detail=exc.reason)
        return page(exc.status, "Sign-in failed", exc.reason)
    now = time.time()
    session = SigninSession(sub, list(binding.scopes), now, now, claims.get("sid"), email, binding.tenant_id,
                            binding.workspace_id)  # fmt: skip
    cookie, csrf = await signin.store.create(session)
    await signin.audit(request, "sign-in", "ok", sub, email, binding.tenant_id)
    log.info("signed in: sub %s, tenant %s, scopes %s", sub, binding.tenant_id, ",".join(binding.scopes))
    reply = redirect(302, "/console/")
    settings = signin.provider.settings
    reply.set_cookie(signin.cookie_name, cookie, httponly=True, secure=True, samesite="Lax", path="/",
                     max_age=settings.session_absolute_s)  # fmt: skip
    # The console reads this one and sends it back as X-CSRF-Token (checked against its hash).
    reply.set_cookie(CSRF_COOKIE, csrf, secure=signin.secure, samesite="Strict", path="/")
    reply.del_cookie(LOGIN_COOKIE, path="/auth/callback")
    return reply


async def logout(request: web.Request) -> web.StreamResponse:
    """End the session; then RP-initiated logout at the provider when it has an end_session_endpoint.

    The CSRF token comes as the X-CSRF-Token header, or as the form field `csrf_token` from a plain HTML form.
    With `Accept: application/json` the answer is 200 `{"location": …}` instead of the 303.
    """
    signin = request.app[SIGNIN_KEY]
    form = await request.post() if request.content_type == "application/x-www-form-urlencoded" else {}
    field = form.get(CSRF_FIELD)
    try:
        session = await signin.session_of(request, field if isinstance(field, str) else None)
    except web.HTTPForbidden:
        return page(403, "Sign-out refused", "The sign-out request carried no valid CSRF token.")
    settings = signin.provider.settings
    back = settings.public_url.rstrip("/") + "/console/"
    target = "/console/"
    if session is not None:
        await signin.store.end(request.cookies[signin.cookie_name], time.time(), "logout")
        await signin.audit(request, "sign-out", "ok", session.sub, session.email, session.tenant_id)
        try:  # this replica may not have read the provider's metadata yet
            end = (await signin.provider.discover()).get("end_session_endpoint")
        except SignInError:
            end = None  # the server session is ended all the same
        if isinstance(end, str):
            # RP-Initiated Logout 1.0: client_id names us instead of an id_token_hint (no ID token is kept);
            # the provider sends the person back to the registered post-logout URI.
            query = urlencode({"client_id": settings.oidc_client_id, "post_logout_redirect_uri": back})
            target = end + ("&" if "?" in end else "?") + query
    # The console asks for JSON and goes on itself: its CSP (form-action 'self') would stop a form redirected to
    # the provider.
    json_wanted = request.headers.get("Accept", "").startswith("application/json")
    reply = web.json_response({"location": target}, headers=NO_STORE) if json_wanted else redirect(303, target)
    reply.del_cookie(signin.cookie_name, path="/")
    reply.del_cookie(CSRF_COOKIE, path="/")
    return reply


async def backchannel_logout(request: web.Request) -> web.StreamResponse:
    signin = request.app[SIGNIN_KEY]
    form = await request.post()
    token = form.get("logout_token")
    try:
        if not isinstance(token, str):
            raise SignInError("no logout_token")
        claims = await signin.provider.logout_token(token)
    except SignInError as exc:
        log.warning("back-channel logout refused: %s", exc.reason)
        return web.json_response({"error": "invalid_request", "error_description": exc.reason}, status=400)
    sub, sid = claims.get("sub"), claims.get("sid")
    ended = await signin.store.end_person(time.time(), "backchannel", sub=sub, sid=sid)
    await signin.audit(request, "backchannel-logout", "ok", sub, detail=f"{ended} session(s) ended")
    return web.Response(status=200, headers={"Cache-Control": "no-store"})


async def signin_context(app: web.Application) -> AsyncIterator[None]:
    """Runs after routes/access.py's context, whose store (migration 022) it shares."""
    if ACCESS_KEY not in app:
        raise RuntimeError("CAVRA_OIDC_ISSUER needs a SQL store: the JSON store keeps no sessions")
    settings = app[SETTINGS_KEY].oidc
    try:
        load_rules(settings.oidc_roles)
    except SignInError as exc:
        # Re-read at each sign-in, so mending the file needs no restart; until then sign-ins answer 503.
        log.warning("sign-ins will be refused: %s", exc.reason)
    app[SIGNIN_KEY] = SignIn(Provider(settings), app[ACCESS_KEY])
    yield


def add_routes(app: web.Application) -> None:
    app.cleanup_ctx.append(signin_context)
    app.router.add_get("/auth/login", login)
    app.router.add_get("/auth/callback", callback)
    app.router.add_post("/auth/logout", logout)
    app.router.add_post("/auth/backchannel-logout", backchannel_logout)
