"""The console's Sinks page in Debian's Chromium: sign in, state, lag, last error, dead letters, pause and
resume, replay; names and errors shown as text, never markup."""

from __future__ import annotations

import json
import sqlite3
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from cavra_ingest.store.migrate import apply_migrations
from tests.console.test_console_auth_browser import make_token, page  # noqa: F401  (the page fixture)
from tests.console_browser import DOCS, LiveServer, seed_decisions, start_loop, stop_loop

pytestmark = pytest.mark.timeout(90)

try:
    from playwright.sync_api import Page, expect
except ImportError:  # reported by require_browser()
    pass


def call(live: LiveServer, token: str, method: str, path: str, body: object = None) -> int:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(live.url(path), data=data, method=method, headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {token}"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


@pytest.fixture
def with_sinks(tmp_path: Path) -> Iterator[tuple[LiveServer, str, Path]]:
    db = tmp_path / "activity.db"
    apply_migrations(db)
    admin = make_token(db, ["admin"], None)
    loop, thread = start_loop()
    live = LiveServer(loop, db).start()
    try:
        assert call(live, admin, "POST", "/decisions", seed_decisions()) == 200
        # Nothing listens on port 9: the sink lags and says why.
        body = {"name": "siem", "kind": "webhook", "target": "http://127.0.0.1:9/<b>x</b>",
                "filter": "decision=block"}  # fmt: skip
        assert call(live, admin, "POST", "/sinks", body) == 201
        with sqlite3.connect(db) as conn:
            conn.execute(
                "INSERT INTO sink_dead_letters (name, decision_id, payload, error, attempts, dead_at)"
                " VALUES (?, 'dec-a3', '{\"decision_id\": \"dec-a3\"}', 'HTTP 400', 1, '2026-01-01T00:00:00Z')",
                ("siem",),
            )
        yield live, admin, db
    finally:
        live.stop()
        stop_loop(loop, thread)


def test_sinks_page_shows_state_lag_errors_and_acts(page: Page, with_sinks: tuple[LiveServer, str, Path]) -> None:  # noqa: F811
    live, admin, _ = with_sinks
    page.goto(live.url("/console"))
    expect(page.locator("#nav-sinks")).to_have_attribute("href", "/console/static/sinks.html")
    page.goto(live.url("/console/static/sinks.html"))
    expect(page.locator("#sinks-signin")).to_be_visible()
    page.fill("#sinks-token", admin)
    page.click("#sinks-signin button[type=submit]")
    row = page.locator("#sinks-body tr")
    expect(row).to_have_count(1)
    # The target is text: no <b> element came from it.
    expect(row.locator("td").first).to_have_text("siem")
    expect(row.locator("td").nth(2)).to_have_text("http://127.0.0.1:9/<b>x</b>")
    assert row.locator("b").count() == 0
    expect(row.locator(".dead")).to_have_text("1")
    expect(row.locator(".last-error")).not_to_be_empty(timeout=20_000)
    expect(row.locator(".lag")).not_to_have_text("0 (0.0 s)")
    if DOCS.exists() and __import__("os").environ.get("CAVRA_SCREENSHOTS"):
        page.screenshot(path=str(DOCS / "console-sinks.png"))
    page.click("text=Pause")
    expect(row.locator(".state")).to_have_text("paused")
    page.click("text=Resume")
    expect(row.locator(".state")).to_have_text("active")
    page.click("text=Replay")
    expect(page.locator("#sinks-status")).to_contain_text("0 replayed, 1 still dead")
    assert page.evaluate("localStorage.length") == 0
