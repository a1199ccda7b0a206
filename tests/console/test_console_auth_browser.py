"""The console on a server that requires tokens, in Debian's Chromium: sign in, tenant shown, sign out."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from cavra_ingest.store.migrate import apply_migrations
from cavra_ingest.store.tokens import INSERT_TOKEN, SqliteTokens, hash_secret, new_token, token_row
from tests.console_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    LiveServer,
    require_browser,
    seed_decisions,
    start_loop,
    stop_loop,
)

pytestmark = pytest.mark.timeout(60)

try:
    from playwright.sync_api import Page, expect, sync_playwright
except ImportError:  # reported by require_browser()
    pass


def make_token(db: Path, scopes: list[str], tenant: str | None) -> str:
    token, secret = new_token(scopes, tenant_id=tenant, name=f"console-{tenant or 'admin'}")
    SqliteTokens(db)._run(INSERT_TOKEN, token_row(token, hash_secret(secret)), write=True)
    return secret


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[tuple[LiveServer, dict[str, str]]]:
    db = tmp_path / "activity.db"
    apply_migrations(db)
    secrets = {"admin": make_token(db, ["admin"], None), "acme": make_token(db, ["read"], "tenant-acme")}
    loop, thread = start_loop()
    live = LiveServer(loop, db).start()
    request = urllib.request.Request(
        live.url("/decisions"),
        data=json.dumps(seed_decisions()).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {secrets['admin']}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    yield live, secrets
    live.stop()
    stop_loop(loop, thread)


@pytest.fixture
def page() -> Iterator[Page]:
    require_browser()
    expect.set_options(timeout=10_000)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1440, "height": 900})
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda msg: errors.append(msg.text) if "Content Security Policy" in msg.text else None)
        yield page
        browser.close()
        assert errors == [], errors


@pytest.mark.slow
def test_console_asks_for_a_token_keeps_it_in_the_tab_and_shows_the_tenant(
    page: Page, secured: tuple[LiveServer, dict[str, str]]
) -> None:
    live, secrets = secured
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(live.url("/console"))
    dialog = page.locator("#signin")
    expect(dialog).to_be_visible()
    # No provider configured: no sign-in route is named, so only the token field is offered.
    expect(page.locator("#signin-provider")).to_be_hidden()
    page.fill("#signin-token", "cavra_not-a-real-token")
    page.click("#signin-form button[type=submit]")
    expect(page.locator("#signin-reason")).to_contain_text("refused")
    page.fill("#signin-token", secrets["acme"])
    page.click("#signin-form button[type=submit]")
    expect(dialog).to_be_hidden()
    # Only tenant-acme's decisions (the beta session), and the header says whose they are.
    expect(page.locator("#results-body tr")).to_have_count(3)
    shown = page.locator("#results-body tr").evaluate_all("rows => rows.map(r => r.dataset.id)")
    assert set(shown) == {"dec-b1", "dec-b2", "dec-b3"}
    expect(page.locator("#identity")).to_contain_text("tenant tenant-acme")
    assert page.evaluate("sessionStorage.getItem('cavra.token')") == secrets["acme"]
    assert page.evaluate("localStorage.length") == 0
    assert not any(secrets["acme"] in url for url in requests + [page.url])
    # An export is fetched with the header: the file holds the tenant's rows only.
    with page.expect_download() as download:
        page.click("#export-ndjson")
    lines = Path(download.value.path()).read_text().splitlines()
    assert sorted(json.loads(line)["decision_id"] for line in lines) == ["dec-b1", "dec-b2", "dec-b3"]
    page.click("#sign-out")
    expect(dialog).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('cavra.token')") is None
