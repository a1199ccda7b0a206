"""OpenAPI descriptions of the sign-in routes (http/signin.py, served with CAVRA_OIDC_ISSUER) and /access-events."""

from __future__ import annotations

from typing import Any

from cavra_ingest.http.openapi_parts import errors, op

HTML = {"text/html": {"schema": {"type": "string"}}}
JSON = "application/json"


def _page(description: str) -> dict[str, Any]:
    return {"description": description, "content": HTML}


def _redirect(description: str) -> dict[str, Any]:
    return {"description": description, "headers": {"Location": {"schema": {"type": "string"}}}}


EVENT = {
    "type": "object",
    "properties": {
        name: {"type": ["string", "null"]}
        for name in ("kind", "outcome", "at", "sub", "email", "remote", "tenant_id", "detail")
    }
    | {"id": {"type": "integer"}},
}
ACCESS_OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/access-events"): op(
        "Sign-ins, sign-outs, refusals, session expiries, newest first (admin; a bound admin: its tenant's)",
        {
            "200": {
                "description": "one page; `next_before` pages on",
                "content": {
                    JSON: {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "items": {"type": "array", "items": EVENT},
                                "next_before": {"type": "integer"},
                            },
                        }
                    }
                },
            },  # fmt: skip
            **errors(400),
        },
        parameters=[
            {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
            {"name": "before", "in": "query", "schema": {"type": "integer", "minimum": 1}},
        ],
    ),
}
SIGNIN_OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/auth/login"): op(
        "Start a sign-in: 302 to the identity provider (code flow with PKCE)",
        {"302": _redirect("to the provider"), "502": _page("the provider cannot be reached")},
    ),
    ("GET", "/auth/callback"): op(
        "Where the provider sends the person back: sets the session cookie, 302 to the console",
        {
            "302": _redirect("signed in"),
            "400": _page("sign-in failed (the page says why)"),
            "403": _page("no role rule matches the person's claims"),
        },  # fmt: skip
    ),
    ("POST", "/auth/logout"): op(
        "End the cookie session (CSRF token as X-CSRF-Token or the form field csrf_token), then 303 to the "
        "provider's end_session_endpoint when offered (RP-initiated logout: client_id, post_logout_redirect_uri)",
        {
            "200": {
                "description": "signed out, asked with `Accept: application/json`: where to go next",
                "content": {JSON: {"schema": {"type": "object", "properties": {"location": {"type": "string"}}}}},
            },
            "303": _redirect("signed out"),
            "403": _page("no valid CSRF token"),
        },  # fmt: skip
    ),
    ("POST", "/auth/backchannel-logout"): op(
        "OIDC Back-Channel Logout: the provider's logout_token ends that person's sessions",
        {"200": {"description": "done"}, "400": {"description": "the logout token does not verify"}},
    ),
}
