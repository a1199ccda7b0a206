"""The test provider itself: discovery, its login form completed by an HTTP client, an RS256 ID token with groups."""

from __future__ import annotations

import base64
import hashlib
import secrets
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.oidcprovider import OidcProvider, sign_in_form

REDIRECT = "http://127.0.0.1:9/auth/callback"
CLIENT = {
    "client_id": "cavra",
    "client_secret": "s3cret-for-tests",
    "redirect_uris": [REDIRECT],
    "backchannel_logout_uri": "http://127.0.0.1:9/auth/backchannel-logout",
    "backchannel_logout_session_required": True,
    "post_logout_redirect_uris": ["http://127.0.0.1:9/"],
}
USERS = {"alice": {"email": "alice@acme.test", "groups": ["cavra-acme-auditors"]}}

pytestmark = pytest.mark.slow


async def authorize(http: aiohttp.ClientSession, provider: OidcProvider, login: str) -> dict[str, object]:
    async with http.get(provider.issuer + "/.well-known/openid-configuration") as reply:
        meta = await reply.json()
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = {
        "client_id": "cavra",
        "response_type": "code",
        "redirect_uri": REDIRECT,
        "scope": "openid email groups",
        "state": "st",
        "nonce": "n0",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    callback = await sign_in_form(http, meta["authorization_endpoint"] + "?" + urlencode(query), login, REDIRECT)
    params = parse_qs(urlsplit(callback).query)
    assert params["state"] == ["st"]
    form = {"grant_type": "authorization_code", "code": params["code"][0], "redirect_uri": REDIRECT}
    form["code_verifier"] = verifier
    basic = base64.b64encode(b"cavra:s3cret-for-tests").decode()
    headers = {"Authorization": "Basic " + basic}
    async with http.post(meta["token_endpoint"], data=form, headers=headers) as reply:
        assert reply.status == 200, await reply.text()
        tokens = await reply.json()
    async with http.get(meta["jwks_uri"]) as reply:
        keys = KeySet.import_key_set(await reply.json())
    token = jwt.decode(tokens["id_token"], keys, algorithms=["RS256"])
    return {"meta": meta, "header": token.header, "claims": token.claims}


async def test_an_http_client_signs_in_and_gets_an_rs256_id_token_with_groups(tmp_path: Path) -> None:
    provider = OidcProvider(tmp_path, [CLIENT], USERS)
    try:
        provider.start()
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            got = await authorize(http, provider, "alice")
            claims, header = got["claims"], got["header"]
            assert isinstance(claims, dict) and isinstance(header, dict)
            assert header["alg"] == "RS256" and header["kid"] == provider.kid
            assert claims["iss"] == provider.issuer and claims["aud"] == "cavra" and claims["nonce"] == "n0"
            assert claims["sub"] == "alice" and claims["groups"] == ["cavra-acme-auditors"]
            assert "at_hash" in claims and "sid" in claims
            meta = got["meta"]
            assert isinstance(meta, dict) and meta["end_session_endpoint"] and meta["backchannel_logout_supported"]

        # Groups changed at the provider show at the next sign-in; a restart rotates the signing key.
        provider.set_users({"alice": {"email": "alice@acme.test", "groups": []}})
        old = provider.kid
        provider.restart()
        assert provider.kid != old
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            claims = (await authorize(http, provider, "alice"))["claims"]
            assert isinstance(claims, dict) and claims["groups"] == []
    finally:
        provider.stop()
