"""The console in headless Chromium signs a person in through the real provider and shows their tenant's records."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from cavra_ingest.http.app import create_app
from cavra_ingest.settings import Settings
from cavra_ingest.store.migrate import apply_migrations
from cavra_ingest.store.tokens import INSERT_TOKEN, SqliteTokens, hash_secret, new_token, token_row
from tests.console_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    DOCS,
    require_browser,
    seed_decisions,
    start_loop,
    stop_loop,
)
from tests.oidcprovider import OidcProvider, free_port, require_provider

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]
RULES = [{"claim": "groups", "value": "cavra-acme-auditors", "tenant": "tenant-acme", "scopes": ["read"]}]


def screenshot(page: Any, name: str) -> None:
    """Refresh docs/<name> only under `make screenshots` (CAVRA_SCREENSHOTS=1), as test_console_browser.py does."""
    if os.environ.get("CAVRA_SCREENSHOTS") == "1":
        page.screenshot(path=str(DOCS / name), full_page=False)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    require_browser()
    require_provider()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    db = tmp_path / "activity.db"
    apply_migrations(db)
    token, secret = new_token(["admin"], name="loader")
    SqliteTokens(db)._run(INSERT_TOKEN, token_row(token, hash_secret(secret)), write=True)
    (tmp_path / "roles.json").write_text(json.dumps(RULES))
    client = {
        "client_id": "cavra", "client_secret": "s", "redirect_uris": [base + "/auth/callback"],
        "post_logout_redirect_uris": [base + "/console/"],
    }  # fmt: skip
    idp = OidcProvider(tmp_path, [client], {"alice": {"email": "a@acme.test", "groups": ["cavra-acme-auditors"]}})
    settings = Settings.of(
        activity_db=str(db), oidc_issuer=idp.issuer, oidc_client_id="cavra", oidc_client_secret="s",
        oidc_roles=str(tmp_path / "roles.json"), public_url=base,
    )  # fmt: skip
    loop, thread = start_loop()
    runner = web.AppRunner(create_app(settings), shutdown_timeout=5)

    async def start() -> None:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()

    try:
        idp.start()
        asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=30)
        request = urllib.request.Request(
            base + "/decisions", data=json.dumps(seed_decisions()).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {secret}"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        yield base
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=30)
        stop_loop(loop, thread)
        idp.stop()


def test_sign_in_with_the_provider_shows_the_mapped_tenant_then_signs_out(served: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=10_000)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
            errors: list[str] = []
            page.on("console", lambda msg: errors.append(msg.text) if "Content Security Policy" in msg.text else None)
            page.goto(served + "/console/")
            button = page.locator("#signin-provider")
            expect(button).to_be_visible()
            expect(button).to_have_text("Sign in with your identity provider")
            # A sentence for a person, not the 401's text for API clients.
            reason = page.locator("#signin-reason")
            expect(reason).to_have_text("Sign in with your company account, or paste an API token below.")
            screenshot(page, "console-sign-in.png")
            button.click()
            page.fill("input[name=login]", "alice")
            page.fill("input[name=password]", "any")
            page.click("button[type=submit]")
            page.wait_for_url(lambda url: url.startswith(served + "/console"))
            expect(page.locator("#results-body tr")).to_have_count(3)
            shown = page.locator("#results-body tr").evaluate_all("rows => rows.map(r => r.dataset.id)")
            assert set(shown) == {"dec-b1", "dec-b2", "dec-b3"}
            # Who is signed in, and which tenant the console shows; a sign-out button beside it.
            expect(page.locator("#identity-label")).to_have_text("Signed in as a@acme.test · tenant tenant-acme")
            expect(page.locator("#sign-out")).to_be_visible()
            screenshot(page, "console-signed-in.png")
            # Sign out: the server session ends, the provider confirms (RP-initiated logout) and sends the person
            # back to the console, which asks them to sign in again.
            page.click("#sign-out")
            page.wait_for_url(lambda url: "/session/end" in url)
            page.click("button[name=logout][value=yes]")
            page.wait_for_url(lambda url: url.startswith(served + "/console"))
            expect(page.locator("#signin-provider")).to_be_visible()
            expect(page.locator("#identity")).to_be_hidden()
            assert not [c for c in page.context.cookies() if c["name"] == "cavra_session"]
            assert errors == []
        finally:
            browser.close()
