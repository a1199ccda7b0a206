"""Who may write and read: bearer tokens, the route → scope rule, tenant scoping, per-token rate limits.

Default deny: every route needs a token with the scope `required_scope` gives it, except PUBLIC_ROUTES.
Handlers ask `principal_of(request)` who is calling and `visible(...)` whether a record is theirs.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiohttp import web

from cavra_ingest.core.errors import ApiError, Problem
from cavra_ingest.core.models import ENCODER, Accepted, BoundSessionIn, SessionIn, now_text
from cavra_ingest.http.keys import GUARD_KEY, QUOTAS_KEY, SETTINGS_KEY, SIGNIN_KEY
from cavra_ingest.http.middleware import Handler
from cavra_ingest.http.quota import Quotas
from cavra_ingest.settings import Settings
from cavra_ingest.store.base import ListQuery
from cavra_ingest.store.tokens import SCOPES, Token, TokenStore, hash_secret, token_store

log = logging.getLogger(__name__)

# Routes anyone may call: liveness and readiness, the console's static shell (it holds no data), the API's description.
PUBLIC_ROUTES = frozenset(
    {
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/"),
        ("GET", "/console"),
        ("GET", "/console/"),
        ("GET", "/console/static/{name}"),
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
        # People's sign-in (http/signin.py, only with CAVRA_OIDC_ISSUER): each checks its own state or token.
        ("GET", "/auth/login"),
        ("GET", "/auth/callback"),
        ("POST", "/auth/logout"),
        ("POST", "/auth/backchannel-logout"),
    }
)
# Token management over HTTP (none yet) would live here and need `admin`.
ADMIN_PREFIXES = ("/tokens", "/auth/tokens", "/sinks", "/access-events")
CHALLENGE = 'Bearer realm="cavra-ingest"'
# A bound on remembered look-ups, so a flood of made-up secrets cannot grow memory without end.
CACHE_MAX_ENTRIES = 10_000
# last_used_at is a hint for operators: written at most this often per token.
TOUCH_INTERVAL_S = 60.0


@dataclass(frozen=True)
class Principal:
    """Who is calling: a token's id, scopes and binding; tenant None means every tenant."""

    token_id: str | None
    scopes: frozenset[str]
    tenant_id: str | None = None
    workspace_id: str | None = None
    name: str | None = None
    rate_per_s: float | None = None
    # Decisions it may create per UTC day (quota.py); None: no quota.
    daily_quota: int | None = None
    # A person signed in with the identity provider (http/signin.py): their email, else their `sub`.
    person: str | None = None

    def allows(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes


# Typed request storage where aiohttp has it (3.13+); a plain key before, where it warns about nothing.
PRINCIPAL: Any = web.RequestKey("principal", Principal) if hasattr(web, "RequestKey") else "cavra.principal"
# No token exists and the server is on loopback: everyone is a platform administrator.
OPEN = Principal(None, frozenset(SCOPES), name="open (no token exists)")


def required_scope(method: str, path: str | None) -> str | None:
    """Return the scope a route needs, or None for a public one: GET reads, POST ingests, anything else admin."""
    method = "GET" if method == "HEAD" else method
    if path is not None and (method, path) in PUBLIC_ROUTES:
        return None
    if path is not None and path.startswith(ADMIN_PREFIXES):
        return "admin"
    if method == "GET":
        return "read"
    if method == "POST":
        return "ingest"
    return "admin"


@functools.lru_cache(maxsize=16)  # asked on every request served without tokens
def is_loopback(host: str) -> bool:
    """Say whether binding `host` keeps the server reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def principal_of(request: web.Request) -> Principal:
    """Return who is calling; only routes that need a token have one."""
    try:
        principal: Principal = request[PRINCIPAL]
    except KeyError:
        raise RuntimeError(f"{request.path} is a public route: no principal to check records against") from None
    return principal


def visible(principal: Principal, tenant_id: str | None, workspace_id: str | None = None) -> bool:
    """Say whether a record with this scope belongs to what the principal may see."""
    if principal.tenant_id is None:
        return True
    if tenant_id != principal.tenant_id:
        return False
    return principal.workspace_id is None or workspace_id == principal.workspace_id


class Scope(msgspec.Struct):
    tenant_id: str | None = None
    workspace_id: str | None = None


_SCOPE_DECODER = msgspec.json.Decoder(Scope)


def visible_payload(request: web.Request, payload: bytes) -> bool:
    """Say whether a stored record (its JSON) belongs to the caller's tenant."""
    principal = principal_of(request)
    if principal.tenant_id is None:
        return True
    scope = _SCOPE_DECODER.decode(payload)
    return visible(principal, scope.tenant_id, scope.workspace_id)


def bound_columns(request: web.Request) -> dict[str, str]:
    """The tenant (and workspace) a bound caller is confined to, as column -> value; {} for a free one."""
    principal = principal_of(request)
    bound = {"tenant_id": principal.tenant_id} if principal.tenant_id is not None else {}
    if bound and principal.workspace_id is not None:
        bound["workspace_id"] = principal.workspace_id
    return bound


def scope_query(request: web.Request, query: ListQuery) -> ListQuery:
    """Force a bound caller's tenant (and workspace) into a listing; naming another one is a 403."""
    bound = bound_columns(request)
    if not bound:
        return query
    equals = []
    for name, values in query.equals:
        if name in bound:
            if any(value != bound[name] for value in values):
                raise ApiError(403, f"this token may only read {name} {bound[name]!r}", parameter=name)
            continue
        equals.append((name, values))
    equals += [(name, (value,)) for name, value in bound.items()]
    return dataclasses.replace(query, equals=tuple(sorted(equals)))


def _stamped(name: str, given: str | None, bound: str | None) -> tuple[str | None, Problem | None]:
    if bound is None or given is None or given == bound:
        return bound if bound is not None else given, None
    return given, Problem(403, f"$.{name}: this token may only write {name} {bound!r}", f"$.{name}")


def stamp(principal: Principal, item: Accepted) -> Accepted | Problem:
    """Stamp a bound caller's tenant and workspace on a record, or refuse one naming others."""
    if principal.tenant_id is None:
        return item
    record = item.record
    tenant, problem = _stamped("tenant_id", record.tenant_id, principal.tenant_id)
    if problem is None:
        workspace, problem = _stamped("workspace_id", record.workspace_id, principal.workspace_id)
    if problem is not None:
        return problem
    if (tenant, workspace) != (record.tenant_id, record.workspace_id):
        record.tenant_id, record.workspace_id = tenant, workspace
        item.payload = ENCODER.encode(record)
    item.writer_tenant = principal.tenant_id
    return item


def stamp_session(principal: Principal, update: SessionIn) -> SessionIn:
    """Stamp a bound caller's scope on a session update (a 403 for another tenant's)."""
    if principal.tenant_id is None:
        return update
    tenant, problem = _stamped("tenant_id", update.tenant_id, principal.tenant_id)
    if problem is None:
        workspace, problem = _stamped("workspace_id", update.workspace_id, principal.workspace_id)
    if problem is not None:
        raise ApiError.from_problem(problem)
    values = {name: getattr(update, name) for name in update.__struct_fields__}
    values.update(tenant_id=tenant, workspace_id=workspace)
    return BoundSessionIn(**values, writer_tenant=principal.tenant_id)


@dataclass
class Bucket:
    """A token bucket: `rate` records per second, `capacity` at once; a batch beyond it runs into debt."""

    rate: float
    capacity: float
    level: float
    stamp: float

    def take(self, records: int, now: float) -> float:
        """Take `records` (0 only checks), returning 0, or the seconds to wait when refused."""
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        need = min(max(records, 1), self.capacity)
        if self.level < need:
            return (need - self.level) / self.rate
        self.level -= records
        return 0.0


@dataclass
class Guard:
    """The app's authentication state: token look-ups (cached), whether auth applies, rate buckets."""

    settings: Settings
    tokens: TokenStore | None
    clock: Callable[[], float] = time.monotonic
    _found: dict[str, tuple[float, Token | None]] = field(default_factory=dict)
    _any_token: tuple[float, bool] | None = None
    _buckets: dict[str, Bucket] = field(default_factory=dict)
    _touched: dict[str, float] = field(default_factory=dict)

    async def required(self) -> bool:
        """Say whether requests need a token: CAVRA_AUTH=required, or once any token exists (for good)."""
        if self.settings.auth.mode == "required":
            return True
        if self.tokens is None:
            return False
        now = self.clock()
        if self._any_token is None or (not self._any_token[1] and now >= self._any_token[0]):
            self._any_token = (now + self.settings.auth.auth_cache_s, await self.tokens.count() > 0)
        return self._any_token[1]

    async def lookup(self, secret: str) -> Token | None:
        assert self.tokens is not None
        now = self.clock()
        key = hash_secret(secret)  # not even memory keeps secrets longer than the request
        cached = self._found.get(key)
        if cached is not None and now < cached[0]:
            return cached[1]
        token = await self.tokens.find(secret)
        if len(self._found) >= CACHE_MAX_ENTRIES:
            self._found.clear()
        self._found[key] = (now + self.settings.auth.auth_cache_s, token)
        return token

    async def authenticate(self, header: str | None) -> Principal:
        """Return the caller's principal, or raise 401."""
        # With a provider configured, every read needs a session or a token, loopback included.
        if not self.settings.oidc.oidc_issuer and not await self.required():
            if is_loopback(self.settings.server.host) or self.settings.auth.insecure_no_auth:
                return OPEN
            raise unauthorized("no token exists yet: create one with `cavra-ingest token create`")
        scheme, _, secret = (header or "").partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret:
            raise unauthorized("a token is required: send `Authorization: Bearer <token>`", invalid=header is not None)
        token = None if self.tokens is None else await self.lookup(secret)
        if token is None:
            raise unauthorized("token is not known", invalid=True)
        if token.revoked_at is not None:
            raise unauthorized("token was revoked", invalid=True)
        if not token.usable(now_text()):
            raise unauthorized("token has expired", invalid=True)
        await self._touch(token.id)
        # A token's own quota, else the server-wide default for tokens without one (0: none).
        quota = token.daily_quota if token.daily_quota is not None else self.settings.auth.default_daily_quota or None
        return Principal(
            token.id, frozenset(token.scopes), token.tenant_id, token.workspace_id, token.name, token.rate_per_s, quota
        )

    async def _touch(self, token_id: str) -> None:
        now = self.clock()
        if now - self._touched.get(token_id, -math.inf) < TOUCH_INTERVAL_S or self.tokens is None:
            return
        self._touched[token_id] = now
        try:
            await self.tokens.touch(token_id)
        except Exception as exc:  # a hint for operators must never fail a request
            log.warning("could not record last use of token %s: %s", token_id, type(exc).__name__)

    def charge(self, principal: Principal, records: int) -> None:
        """Count records against a rate-limited token; 429 with Retry-After beyond its rate."""
        rate = principal.rate_per_s
        if rate is None or principal.token_id is None:
            return
        now = self.clock()
        bucket = self._buckets.get(principal.token_id)
        if bucket is None:
            capacity = max(1.0, rate * self.settings.auth.rate_burst_s)
            bucket = self._buckets[principal.token_id] = Bucket(rate, capacity, capacity, now)
        wait = bucket.take(records, now)
        if wait > 0:
            raise ApiError(
                429, f"this token may write {rate:g} records per second; retry later", retry_after=math.ceil(wait)
            )


def unauthorized(detail: str, *, invalid: bool = False) -> ApiError:
    challenge = CHALLENGE + (', error="invalid_token"' if invalid else "")
    return ApiError(401, detail, headers={"WWW-Authenticate": challenge})


def charge(request: web.Request, records: int) -> None:
    """Count records a request writes against its token's rate."""
    request.app[GUARD_KEY].charge(principal_of(request), records)


@web.middleware
async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authenticate and authorise every request the route rule does not make public."""
    resource = request.match_info.route.resource
    path = resource.canonical if resource is not None else None
    scope = required_scope(request.method, path)
    if scope is None:
        return await handler(request)
    header = request.headers.get("Authorization")
    signin = request.app.get(SIGNIN_KEY)
    if header is None and signin is not None:
        principal = await signin.principal(request)  # a person's cookie session (http/signin.py), else 401
    else:
        principal = await request.app[GUARD_KEY].authenticate(header)
    if not principal.allows(scope):
        raise ApiError(403, f"this token lacks the {scope} scope")
    request[PRINCIPAL] = principal
    return await handler(request)


async def guard_context(app: web.Application) -> AsyncIterator[None]:
    """Open the token store beside the data store (whose migration 008 made its table)."""
    settings = app[SETTINGS_KEY]
    tokens = token_store(settings)
    if tokens is None and settings.auth.mode == "required":
        raise RuntimeError("CAVRA_AUTH=required needs a SQL store: the JSON store keeps no tokens")
    if tokens is not None:
        await tokens.open()
    app[GUARD_KEY] = Guard(settings, tokens)
    app[QUOTAS_KEY] = Quotas(tokens, settings.auth.quota_cache_s)
    try:
        yield
    finally:
        if tokens is not None:
            await tokens.close()


async def startup_problem(settings: Settings) -> str | None:
    """Check at `serve` whether serving without tokens is allowed here; return why not, or None."""
    from cavra_ingest.store import make_store

    tokens = token_store(settings)
    count = 0
    if tokens is not None:
        await make_store(settings).migrate()
        await tokens.open()
        try:
            count = await tokens.count()
        finally:
            await tokens.close()
    elif settings.auth.mode == "required":
        return "CAVRA_AUTH=required needs a SQL store (CAVRA_ACTIVITY_DB): the JSON store keeps no tokens"
    if count or settings.auth.mode == "required":
        log.info("authentication required: %d token(s) exist", count)
        return None
    if settings.auth.insecure_no_auth:
        log.warning(
            "INSECURE: --insecure-no-auth: serving %s WITHOUT AUTHENTICATION; anyone who reaches this port can "
            "forge and read every tenant's records",
            settings.server.host,
        )
        return None
    if is_loopback(settings.server.host):
        log.warning(
            "no token exists: serving without authentication on loopback (%s) only; "
            "create one with `cavra-ingest token create --scope admin`",
            settings.server.host,
        )
        return None
    return (
        f"refusing to serve on {settings.server.host} without authentication: no token exists. Create one with "
        "`cavra-ingest token create --scope ingest --scope read` (same store settings as serve), "
        "or pass --insecure-no-auth to serve openly anyway"
    )
