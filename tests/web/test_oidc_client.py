"""The relying party against a real provider (node oidc-provider): code exchange, ID token checks, key rotation."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from cavra_ingest.http import oidc
from cavra_ingest.http.oidc import Provider, SignInError, pkce_pair
from cavra_ingest.settings import Settings
from tests.oidcprovider import OidcProvider, free_port, sign_in_form

pytestmark = pytest.mark.slow
PUBLIC = f"http://127.0.0.1:{free_port()}"
SECRET = "client-secret-for-tests"
USERS = {"alice": {"email": "alice@acme.test", "groups": ["cavra-acme-auditors"]}}
TTL = 60


def client(client_id: str) -> dict[str, object]:
    return {
        "client_id": client_id,
        "client_secret": SECRET,
        "redirect_uris": [PUBLIC + "/auth/callback"],
        "backchannel_logout_uri": PUBLIC + "/auth/backchannel-logout",
        "backchannel_logout_session_required": True,
        "post_logout_redirect_uris": [PUBLIC + "/"],
    }


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    provider = OidcProvider(tmp_path_factory.mktemp("idp"), [client("cavra"), client("other")], USERS, id_token_ttl=TTL)
    try:
        provider.start()
        yield provider
    finally:
        provider.stop()


def relying_party(idp: OidcProvider, client_id: str = "cavra", **clock: float) -> Provider:
    settings = Settings.of(
        oidc_issuer=idp.issuer, oidc_client_id=client_id, oidc_client_secret=SECRET, public_url=PUBLIC
    )
    offset = clock.get("offset", 0.0)
    return Provider(settings.oidc, clock=lambda: time.time() + offset)


async def code_for(rp: Provider, login: str = "alice") -> tuple[str, str, str]:
    """Sign in at the provider's form; return (code, verifier, nonce) as the callback would receive them."""
    verifier, challenge = pkce_pair()
    url = await rp.authorize_url("state-1", "nonce-1", challenge)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        callback = await sign_in_form(http, url, login, rp.redirect_uri)
    query = parse_qs(urlsplit(callback).query)
    assert query["state"] == ["state-1"]
    return query["code"][0], verifier, "nonce-1"


async def test_a_code_becomes_a_verified_id_token_with_the_groups_claim(idp: OidcProvider) -> None:
    rp = relying_party(idp)
    code, verifier, nonce = await code_for(rp)
    tokens = await rp.exchange(code, verifier)
    claims = await rp.id_token(tokens["id_token"], nonce, tokens.get("access_token"))
    assert claims["sub"] == "alice" and claims["groups"] == ["cavra-acme-auditors"]
    assert claims["email"] == "alice@acme.test" and claims["sid"]


async def test_a_replayed_code_and_a_wrong_verifier_are_refused(idp: OidcProvider) -> None:
    rp = relying_party(idp)
    code, verifier, _ = await code_for(rp)
    await rp.exchange(code, verifier)
    with pytest.raises(SignInError, match="refused the code"):
        await rp.exchange(code, verifier)
    code, _, _ = await code_for(rp)
    with pytest.raises(SignInError, match="refused the code"):
        await rp.exchange(code, pkce_pair()[0])


async def test_wrong_nonce_and_wrong_at_hash_are_refused(idp: OidcProvider) -> None:
    rp = relying_party(idp)
    code, verifier, _ = await code_for(rp)
    tokens = await rp.exchange(code, verifier)
    with pytest.raises(SignInError, match="nonce"):
        await rp.id_token(tokens["id_token"], "another-nonce", tokens["access_token"])
    with pytest.raises(SignInError, match="at_hash"):
        await rp.id_token(tokens["id_token"], "nonce-1", "not-the-access-token")


async def test_an_expired_id_token_and_one_for_another_audience_are_refused(idp: OidcProvider) -> None:
    rp = relying_party(idp)
    code, verifier, nonce = await code_for(rp)
    tokens = await rp.exchange(code, verifier)
    skew = rp.settings.oidc_clock_skew_s
    later = relying_party(idp, offset=TTL + skew + 5)
    with pytest.raises(SignInError, match="exp"):
        await later.id_token(tokens["id_token"], nonce, tokens["access_token"])
    within_skew = relying_party(idp, offset=TTL + skew - 5)
    assert (await within_skew.id_token(tokens["id_token"], nonce, tokens["access_token"]))["sub"] == "alice"
    issued_before = relying_party(idp, offset=-(skew + 5))  # our clock behind: iat is in the future
    with pytest.raises(SignInError, match="future"):
        await issued_before.id_token(tokens["id_token"], nonce, tokens["access_token"])
    other = relying_party(idp, "other")
    with pytest.raises(SignInError, match="aud"):
        await other.id_token(tokens["id_token"], nonce, tokens["access_token"])


async def test_a_rotated_signing_key_is_fetched_once_and_a_forged_token_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(oidc, "JWKS_REFETCH_INTERVAL_S", 0.0)
    provider = OidcProvider(tmp_path, [client("cavra")], USERS)
    try:
        provider.start()
        rp = relying_party(provider)
        code, verifier, nonce = await code_for(rp)
        old = await rp.exchange(code, verifier)
        await rp.id_token(old["id_token"], nonce, old["access_token"])
        old_kid = provider.kid
        provider.restart()  # a new key, a new kid: the cached key set does not know it
        assert provider.kid != old_kid
        code, verifier, nonce = await code_for(rp)
        new = await rp.exchange(code, verifier)
        assert (await rp.id_token(new["id_token"], nonce, new["access_token"]))["sub"] == "alice"
        assert rp._keys is not None and [key.kid for key in rp._keys.keys] == [provider.kid]
        # The old key is gone from the provider: a token it signed no longer verifies.
        with pytest.raises(SignInError, match="signature"):
            await rp.id_token(old["id_token"], "nonce-1", old["access_token"])
        header, payload, _ = new["id_token"].split(".")
        with pytest.raises(SignInError, match="signature"):
            await rp.id_token(f"{header}.{payload}.{'A' * 342}", nonce, new["access_token"])
    finally:
        provider.stop()
