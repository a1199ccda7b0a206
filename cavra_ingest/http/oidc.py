"""The OpenID Connect relying party: discovery, the code exchange with PKCE, ID and logout token checks.

The JOSE parts (signatures, JWKS, registered claims) are joserfc's; this module only says which claims must hold.
The provider's keys are cached and fetched again once when a token names an unknown `kid` (key rotation).
Nothing here logs or returns a token: a failure is a `SignInError` with a reason safe to show and log.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jws import extract_compact

from cavra_ingest.settings.groups import OidcSettings

# Asymmetric signatures only: an HS256 token would be signed with the client secret, which this server holds.
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "ES256", "ES384")
BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
HTTP_TIMEOUT_S = 10.0
# A token naming an unknown key refetches the key set at most this often (a flood cannot hammer the provider).
JWKS_REFETCH_INTERVAL_S = 10.0


class SignInError(Exception):
    """A sign-in that cannot go on: `reason` is safe for the page and the log (never a token)."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


def pkce_pair() -> tuple[str, str]:
    """Return a PKCE verifier and its S256 challenge (RFC 7636)."""
    verifier = secrets.token_urlsafe(48)
    return verifier, pkce_challenge(verifier)


def pkce_challenge(verifier: str) -> str:
    """The S256 code challenge of a verifier (RFC 7636, section 4.2)."""
    return b64(hashlib.sha256(verifier.encode()).digest())


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def at_hash(access_token: str, alg: str) -> str:
    """The left half of the access token's hash, by the ID token's algorithm's hash size (OIDC Core 3.1.3.6)."""
    bits = alg[-3:]
    digest = {"256": hashlib.sha256, "384": hashlib.sha384, "512": hashlib.sha512}[bits](access_token.encode())
    raw = digest.digest()
    return b64(raw[: len(raw) // 2])


@dataclass
class Provider:
    """One configured provider: its metadata and keys, fetched on first use."""

    settings: OidcSettings
    clock: Callable[[], float] = time.time
    metadata: dict[str, Any] = field(default_factory=dict)
    _keys: KeySet | None = None
    _fetched_at: float = 0.0

    @property
    def redirect_uri(self) -> str:
        return self.settings.public_url.rstrip("/") + "/auth/callback"

    async def _get_json(self, url: str) -> Any:
        try:
            timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
            async with aiohttp.ClientSession(timeout=timeout) as http, http.get(url) as reply:
                if reply.status != 200:
                    raise SignInError(f"the identity provider answered {reply.status} at {url}", 502)
                return await reply.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise SignInError(f"the identity provider is unreachable ({type(exc).__name__})", 502) from None

    async def discover(self) -> dict[str, Any]:
        if not self.metadata:
            issuer = self.settings.oidc_issuer.rstrip("/")
            meta = await self._get_json(issuer + "/.well-known/openid-configuration")
            if not isinstance(meta, dict) or meta.get("issuer") != self.settings.oidc_issuer:
                raise SignInError("the provider's discovery document names another issuer", 502)
            for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                if not isinstance(meta.get(name), str):
                    raise SignInError(f"the provider's discovery document has no {name}", 502)
            self.metadata = meta
        return self.metadata

    async def keys(self, kid: str | None) -> KeySet:
        """The provider's keys; fetched again (at most every few seconds) when `kid` is not among them."""
        meta = await self.discover()
        known = self._keys is not None and (kid is None or any(k.kid == kid for k in self._keys.keys))
        if not known and (self._keys is None or self.clock() - self._fetched_at >= JWKS_REFETCH_INTERVAL_S):
            try:
                self._keys = KeySet.import_key_set(await self._get_json(meta["jwks_uri"]))
            except (JoseError, ValueError, TypeError, KeyError):
                raise SignInError("the provider's key set cannot be read", 502) from None
            self._fetched_at = self.clock()
        assert self._keys is not None
        return self._keys

    async def authorize_url(self, state: str, nonce: str, challenge: str) -> str:
        meta = await self.discover()
        query = {
            "response_type": "code",
            "client_id": self.settings.oidc_client_id,
            "redirect_uri": self.redirect_uri,
            "scope": self.settings.oidc_scopes,
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        endpoint = str(meta["authorization_endpoint"])
        return endpoint + ("&" if "?" in endpoint else "?") + urlencode(query)

    async def exchange(self, code: str, verifier: str) -> dict[str, Any]:
        """Trade the code for tokens at the token endpoint (client_secret_basic, or a public client)."""
        meta = await self.discover()
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": self.redirect_uri}
        form["code_verifier"] = verifier
        headers = {"Accept": "application/json"}
        if self.settings.oidc_client_secret:
            pair = f"{self.settings.oidc_client_id}:{self.settings.oidc_client_secret}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        else:
            form["client_id"] = self.settings.oidc_client_id
        try:
            timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
            async with (
                aiohttp.ClientSession(timeout=timeout) as http,
                http.post(meta["token_endpoint"], data=form, headers=headers) as reply,
            ):
                body = await reply.json(content_type=None)
                status = reply.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise SignInError(f"the identity provider is unreachable ({type(exc).__name__})", 502) from None
        if status != 200 or not isinstance(body, dict) or not isinstance(body.get("id_token"), str):
            error = body.get("error") if isinstance(body, dict) else None
            raise SignInError(f"the provider refused the code ({error or status}): it may be used or expired")
        return body

    async def _decode(self, token: str) -> tuple[dict[str, Any], dict[str, Any]]:
        try:
            header = extract_compact(token.encode()).headers()
        except (JoseError, ValueError):
            raise SignInError("the token is not a signed JWT") from None
        if header.get("alg") not in ALGORITHMS:
            raise SignInError(f"the token's algorithm {header.get('alg')!r} is not accepted")
        keys = await self.keys(header.get("kid"))
        try:
            decoded = jwt.decode(token, keys, algorithms=list(ALGORITHMS))
        except JoseError as exc:
            raise SignInError(f"the token's signature does not verify ({exc.error})") from None
        return dict(decoded.header), dict(decoded.claims)

    def _check_claims(self, claims: dict[str, Any], *, essential: tuple[str, ...], exp: bool) -> None:
        skew = self.settings.oidc_clock_skew_s
        options: dict[str, Any] = {
            "iss": {"essential": True, "value": self.settings.oidc_issuer},
            "aud": {"essential": True, "value": self.settings.oidc_client_id},
        }
        options.update({name: {"essential": True} for name in essential})
        try:
            jwt.JWTClaimsRegistry(now=lambda: int(self.clock()), leeway=skew, **options).validate(claims)
        except JoseError as exc:
            raise SignInError(f"the token's claims do not hold ({exc.error}: {exc.description})") from None
        now = self.clock()
        iat = claims.get("iat")
        if not isinstance(iat, int | float) or iat > now + skew:
            raise SignInError("the token was issued in the future (iat) or has no iat")
        if exp and not isinstance(claims.get("exp"), int | float):
            raise SignInError("the token has no exp")
        aud = claims.get("aud")
        if isinstance(aud, list) and len(aud) > 1 and claims.get("azp") != self.settings.oidc_client_id:
            raise SignInError("the token names several audiences and another authorized party")

    async def id_token(self, token: str, nonce: str, access_token: str | None) -> dict[str, Any]:
        """Verify an ID token: signature, iss, aud, exp, iat (bounded skew), nonce, at_hash when present."""
        header, claims = await self._decode(token)
        self._check_claims(claims, essential=("sub", "exp", "iat"), exp=True)
        if not secrets.compare_digest(str(claims.get("nonce", "")), nonce):
            raise SignInError("the ID token's nonce does not match this sign-in")
        if "at_hash" in claims:
            if access_token is None or at_hash(access_token, header["alg"]) != claims["at_hash"]:
                raise SignInError("the ID token's at_hash does not match its access token")
        return claims

    async def logout_token(self, token: str) -> dict[str, Any]:
        """Verify a back-channel logout token (OIDC Back-Channel Logout 1.0, section 2.6)."""
        _, claims = await self._decode(token)
        self._check_claims(claims, essential=("iat",), exp=False)
        events = claims.get("events")
        if not isinstance(events, dict) or BACKCHANNEL_EVENT not in events:
            raise SignInError("the logout token carries no back-channel logout event")
        if "nonce" in claims:
            raise SignInError("a logout token must not carry a nonce")
        if not claims.get("sub") and not claims.get("sid"):
            raise SignInError("the logout token names neither sub nor sid")
        return claims
