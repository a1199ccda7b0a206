"""The OpenID Connect settings group: read from CAVRA_OIDC_*, the secret redacted, URLs checked."""

from __future__ import annotations

import pytest

from cavra_ingest.cli.lifecycle import redact
from cavra_ingest.settings import Settings, SettingsError


def test_oidc_settings_come_from_the_environment() -> None:
    env = {
        "CAVRA_OIDC_ISSUER": "https://login.example.com/realms/acme",
        "CAVRA_OIDC_CLIENT_ID": "cavra",
        "CAVRA_OIDC_CLIENT_SECRET": "hush",
        "CAVRA_OIDC_ROLES": "/etc/cavra/roles.json",
        "CAVRA_PUBLIC_URL": "https://cavra.example.com",
        "CAVRA_SESSION_IDLE_S": "600",
    }
    oidc = Settings.from_env(env).oidc
    assert oidc.oidc_issuer == env["CAVRA_OIDC_ISSUER"] and oidc.oidc_client_id == "cavra"
    assert oidc.oidc_roles == "/etc/cavra/roles.json" and oidc.session_idle_s == 600
    assert oidc.session_absolute_s == 43200 and Settings().oidc.oidc_issuer == ""
    assert redact("oidc_client_secret", oidc.oidc_client_secret) == "***"


@pytest.mark.parametrize("variable", ["CAVRA_OIDC_ISSUER", "CAVRA_PUBLIC_URL"])
def test_plain_http_is_refused_off_loopback(variable: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env({variable: "http://login.example.com"})
    assert Settings.from_env({variable: "http://127.0.0.1:9000"})
