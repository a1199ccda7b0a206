"""The session page's evidence piece in Debian's Chromium: the bundle link and the on-screen check."""

from __future__ import annotations

import sqlite3
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import decision
from tests.console_browser import CHROMIUM, CHROMIUM_ARGS, LiveServer, require_browser, start_loop, stop_loop

pytestmark = pytest.mark.timeout(60)

try:
    from playwright.sync_api import Page, expect, sync_playwright
except ImportError:  # reported by require_browser(), which fails on CI and skips elsewhere
    pass


@pytest.fixture
def page() -> Iterator[Page]:
    require_browser()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        yield page
        browser.close()
        assert errors == []


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    loop, thread = start_loop()
    server = LiveServer(loop, tmp_path / "activity.db").start()
    yield server
    server.stop()
    stop_loop(loop, thread)


def wait_for_checkpoint(live: LiveServer, size: int) -> None:
    """Poll the API until the checkpoint loop (every 0.5 s by default) has signed `size` leaves."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with urllib.request.urlopen(live.url("/log/checkpoint")) as response:
            if int(response.read().decode().split("\n")[1]) >= size:
                return
        time.sleep(0.05)  # polling a condition, bounded by the deadline
    raise TimeoutError("no checkpoint")


@pytest.mark.slow
def test_session_page_links_the_bundle_and_verifies_the_records_on_screen(page: Page, live: LiveServer) -> None:
    bodies = [decision(session_id="sess-ev") for _ in range(4)]
    live.post("/decisions", bodies)
    wait_for_checkpoint(live, 4)
    page.goto(live.url("/console?view=session&id=sess-ev"))
    expect(page.locator("#session-evidence")).to_have_text("4 record(s) on screen verified against checkpoint 4")
    link = page.locator("#session-evidence-link")
    expect(link).to_be_visible()
    assert link.get_attribute("href") == "/sessions/sess-ev/evidence"
    # An edit straight into the file shows on the page as a record that no longer matches.
    conn = sqlite3.connect(live.db)
    with conn:
        conn.execute("UPDATE activity_decisions SET payload = replace(payload, '\"allow\"', '\"block\"')"
                     " WHERE decision_id = ?", (bodies[1]["decision_id"],))  # fmt: skip
    conn.close()
    page.reload()
    expect(page.locator("#session-evidence")).to_have_text("1 record(s) on screen do NOT match checkpoint 4")
