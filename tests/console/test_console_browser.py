"""The console in Debian's Chromium, driven by Playwright, against a real server seeded through the API."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from cavra_ingest.core.models import OUTCOMES, SESSION_STATES, SEVERITIES
from cavra_ingest.store.base import DECISION_FILTERS, FACET_FIELDS, SESSION_FILTERS
from tests.console_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    DOCS,
    LiveServer,
    require_browser,
    seed_decisions,
    start_loop,
    stop_loop,
)

pytestmark = pytest.mark.timeout(60)

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError:  # reported by require_browser(), which fails on CI and skips elsewhere
    pass

ALL = {d["decision_id"] for d in seed_decisions()}
ALPHA = ["dec-a1", "dec-a2", "dec-a3", "dec-a4"]
BETA = ["dec-b1", "dec-b2", "dec-b3"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    require_browser()
    expect.set_options(timeout=10_000)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def server_loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop, thread = start_loop()
    yield loop
    stop_loop(loop, thread)


def seeded_server(loop: asyncio.AbstractEventLoop, db: Path) -> LiveServer:
    """Start a server on a fresh SQLite file and seed it through the API."""
    live = LiveServer(loop, db).start()
    live.post("/decisions", seed_decisions())
    live.post("/sessions", {"session_id": "sess-gamma", "state": "completed"})
    return live


@pytest.fixture(scope="module")
def server(server_loop: asyncio.AbstractEventLoop, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One seeded server shared by the tests that only read."""
    live = seeded_server(server_loop, tmp_path_factory.mktemp("console") / "activity.db")
    yield live
    live.stop()


@pytest.fixture
def own_server(server_loop: asyncio.AbstractEventLoop, tmp_path: Path) -> Iterator[LiveServer]:
    """A seeded server of the test's own, for tests that write or stop it."""
    live = seeded_server(server_loop, tmp_path / "activity.db")
    yield live
    live.stop()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # The console runs under a strict Content-Security-Policy; anything it blocks is a bug.
    page.on("console", lambda msg: errors.append(msg.text) if "Content Security Policy" in msg.text else None)
    yield page
    context.close()
    assert errors == [], f"errors in the page: {errors}"


def rows(page: Page) -> Any:
    return page.locator("#results-body tr")


def expect_ids(page: Page, ids: list[str] | set[str]) -> None:
    """Wait until the table shows exactly these rows (in this order, when a list)."""
    expect(rows(page)).to_have_count(len(ids))
    shown = rows(page).evaluate_all("rows => rows.map(r => r.dataset.id)")
    assert (shown if isinstance(ids, list) else set(shown)) == ids


def expect_query(page: Page, **expected: list[str]) -> None:
    """Wait until the address bar's query holds exactly these parameters."""
    page.wait_for_function(
        "expected => { const q = new URLSearchParams(location.search);"
        " return new Set(q.keys()).size === Object.keys(expected).length"
        " && Object.entries(expected).every(([k, v]) => JSON.stringify(q.getAll(k)) === JSON.stringify(v)); }",
        arg=expected,
    )


def screenshot(page: Page, name: str) -> None:
    """Refresh docs/<name>, only when asked (`make screenshots`): a plain test run leaves the checkout clean."""
    if os.environ.get("CAVRA_SCREENSHOTS") != "1":
        return
    DOCS.mkdir(exist_ok=True)
    page.screenshot(path=str(DOCS / name), full_page=False)


def utc_input(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def test_root_redirects_and_decisions_table_shows_the_seeded_rows(page: Page, server: LiveServer) -> None:
    page.goto(server.url("/"))
    expect(page).to_have_url(server.url("/console"))
    expect_ids(page, ["dec-a4", "dec-a3", "dec-a2", "dec-a1", "dec-b3", "dec-b2", "dec-b1", "dec-g1", "dec-g2"]
               + ["dec-g3", "dec-g4", "dec-g5"])  # fmt: skip
    expect(page.locator("#summary")).to_have_text("Showing 1–12 of 12 decisions, newest first")
    headers = page.locator("#results-head th").all_inner_texts()
    assert [h.lower() for h in headers] == [
        "time", "outcome", "severity", "action", "target", "rule", "agent", "repository", "session",
    ]  # fmt: skip
    newest = rows(page).first
    # Outcome and severity read as text, not just colour.
    expect(newest.locator("td").nth(1)).to_have_text(re.compile(r"Needs approval$"))
    expect(newest.locator("td").nth(2)).to_have_text(re.compile(r"Critical$"))
    expect(newest).to_contain_text("git push --force origin main")
    expect(newest.get_by_role("link", name="sess-alpha")).to_be_visible()
    # Record text is data, never markup.
    expect(page.get_by_text('<img src=x onerror="window.__pwned=1">')).to_be_visible()
    assert page.evaluate("window.__pwned") is None
    expect(page.locator("#store-kind")).to_have_text("sqlite")
    expect(page.locator("#live-status")).to_contain_text("Live")
    expect(page.locator("#facets")).to_be_visible()
    screenshot(page, "console-decisions.png")


def test_sessions_table(page: Page, server: LiveServer) -> None:
    page.goto(server.url("/console"))
    expect(rows(page)).to_have_count(12)
    page.get_by_role("link", name="Sessions", exact=True).click()
    expect_query(page, view=["sessions"])
    expect_ids(page, ["sess-alpha", "sess-beta", "sess-gamma"])
    expect(page.get_by_role("link", name="Sessions", exact=True)).to_have_attribute("aria-current", "page")
    gamma = rows(page).nth(2).locator("td")
    assert gamma.all_inner_texts()[:4] == ["sess-gamma", "acme/infra", "codex", "cavra-ai-agent-baseline"]
    expect(gamma.nth(4)).to_have_text(re.compile("Completed$"))
    expect(gamma.nth(5)).to_have_text("5")
    expect(gamma.nth(6)).to_have_text("2")
    expect(rows(page).first.locator("td").nth(7)).to_have_text("1")
    screenshot(page, "console-sessions.png")


def test_each_filter_narrows_the_rows_and_lands_in_the_url(page: Page, server: LiveServer) -> None:
    page.goto(server.url("/console"))
    expect(rows(page)).to_have_count(12)
    now = datetime.now(UTC)

    def text(label: str, value: str) -> None:
        field = page.locator("#filters").get_by_label(label, exact=True)
        field.fill(value)
        field.press("Enter")

    def scoped(label: str, value: str) -> None:
        summary = page.get_by_text("Scope and tracing")
        if page.locator("details.more-filters").get_attribute("open") is None:
            summary.click()
        text(label, value)

    def tick(*labels: str) -> None:
        for label in labels:
            page.get_by_role("checkbox", name=label, exact=True).check()

    def period(value: str) -> None:
        page.get_by_label("Time range").select_option(value)

    since, until = utc_input(now - timedelta(days=4)), utc_input(now - timedelta(days=2))

    def custom() -> None:
        period("custom")
        page.get_by_label("From (UTC)").fill(since)
        expect_ids(page, ALL - {"dec-g3", "dec-g4", "dec-g5"})
        page.get_by_label("Until (UTC)").fill(until)

    blocked_or_held = {"dec-a3", "dec-a4", "dec-b3", "dec-g3", "dec-g5"}
    steps: list[tuple[Callable[[], object], dict[str, list[str]], set[str]]] = [
        (lambda: text("Repository", "acme/api"), {"repository": ["acme/api"]}, set(ALPHA)),
        (lambda: text("Agent", "codex"), {"agent_id": ["codex"]}, ALL - set(ALPHA)),
        (lambda: text("Policy pack", "strict-prod"), {"policy_pack": ["strict-prod"]}, set(BETA)),
        (lambda: text("Action type", "execute_command"), {"action_type": ["execute_command"]}, {"dec-a3", "dec-g3"}),
        (lambda: text("Session id", "sess-beta"), {"session_id": ["sess-beta"]}, set(BETA)),
        (lambda: tick("Block", "Needs approval"), {"decision": ["block", "require_approval"]}, blocked_or_held),
        (lambda: tick("Critical"), {"severity": ["critical"]}, {"dec-a4", "dec-b3"}),
        (lambda: period("1h"), {"range": ["1h"]}, set(ALPHA)),
        (lambda: period("24h"), {"range": ["24h"]}, set(ALPHA + BETA)),
        (lambda: period("7d"), {"range": ["7d"]}, set(ALPHA + BETA) | {"dec-g1", "dec-g2"}),
        (custom, {"range": ["custom"], "since": [since + "Z"], "until": [until + "Z"]}, {"dec-g1", "dec-g2"}),
        (lambda: scoped("Tenant", "tenant-acme"), {"tenant_id": ["tenant-acme"]}, set(BETA)),
        (lambda: scoped("Workspace", "ws-frontend"), {"workspace_id": ["ws-frontend"]}, set(BETA)),
        (lambda: scoped("Rule", "fs.read"), {"rule_id": ["fs.read"]}, {"dec-a1", "dec-b1", "dec-g2", "dec-g4"}),
        (lambda: scoped("Correlation id", "corr-release-7"), {"correlation_id": ["corr-release-7"]}, {"dec-a4"}),
        # Several values in one text field mean "any of them", as repeated query parameters do.
        (
            lambda: text("Repository", "acme/web, acme/infra"),
            {"repository": ["acme/web", "acme/infra"]},
            ALL - set(ALPHA),
        ),
    ]
    for apply, query, ids in steps:
        apply()
        expect_query(page, **query)
        expect_ids(page, ids)
        page.get_by_role("button", name="Clear all").click()
        expect_query(page)
        expect_ids(page, ALL)

    # Filters combine (AND) across fields.
    text("Repository", "acme/api")
    tick("Block")
    expect_query(page, repository=["acme/api"], decision=["block"])
    expect_ids(page, ["dec-a3"])

    # The sessions view has its own filters; the shared ones travel with the view switch.
    page.get_by_role("link", name="Sessions", exact=True).click()
    expect_query(page, view=["sessions"], repository=["acme/api"])
    expect_ids(page, ["sess-alpha"])
    session_steps: list[tuple[Callable[[], object], dict[str, list[str]], list[str]]] = [
        (lambda: tick("Completed"), {"state": ["completed"]}, ["sess-gamma"]),
        (lambda: text("At least this many blocked", "2"), {"min_blocked": ["2"]}, ["sess-gamma"]),
        (lambda: period("24h"), {"range": ["24h"]}, ["sess-alpha", "sess-beta"]),
        (lambda: text("Repository", "acme/web"), {"repository": ["acme/web"]}, ["sess-beta"]),
    ]
    page.get_by_role("button", name="Clear all").click()
    for apply, query, session_ids in session_steps:
        apply()
        expect_query(page, view=["sessions"], **query)
        expect_ids(page, session_ids)
        page.get_by_role("button", name="Clear all").click()
        expect_ids(page, ["sess-alpha", "sess-beta", "sess-gamma"])


def filter_controls(page: Page) -> dict[str, list[str]]:
    """The filters the form offers in this view (by name), with the values of their checkboxes."""
    return page.locator("#filters").evaluate(
        """form => {
            const out = {};
            for (const input of form.elements) {
                const box = input.closest("[data-views]");
                if (!input.name || !box || box.hidden || getComputedStyle(box).display === "none") continue;
                out[input.name] = out[input.name] || [];
                if (input.type === "checkbox") out[input.name].push(input.value);
            }
            return out;
        }"""
    )


def test_filter_controls_are_the_ones_the_config_lists(page: Page, server: LiveServer) -> None:
    status, config = server.request("GET", "/console/config")
    assert status == 200
    assert config["enums"] == {"decision": list(OUTCOMES), "severity": list(SEVERITIES), "state": list(SESSION_STATES)}
    page.goto(server.url("/console"))
    expect(rows(page)).to_have_count(12)
    controls = filter_controls(page)
    assert set(controls) == set(config["filters"]["decisions"]) == set(DECISION_FILTERS)
    assert sorted(controls["decision"]) == sorted(OUTCOMES)  # the outcome multi-select, exactly
    assert sorted(controls["severity"]) == sorted(SEVERITIES)
    # Facets arrive after the table: wait for the groups before reading them.
    expect(page.locator("#facet-groups section")).to_have_count(len(FACET_FIELDS))
    groups = page.locator("#facet-groups section").evaluate_all("gs => gs.map(g => g.dataset.dim)")
    assert groups == config["facet_fields"] == list(FACET_FIELDS)

    page.get_by_role("link", name="Sessions", exact=True).click()
    expect_ids(page, ["sess-alpha", "sess-beta", "sess-gamma"])
    controls = filter_controls(page)
    assert set(controls) == set(config["filters"]["sessions"]) == {*SESSION_FILTERS, "min_blocked"}
    assert sorted(controls["state"]) == sorted(SESSION_STATES)


def test_filter_controls_follow_the_config_not_a_copy(page: Page, server: LiveServer) -> None:
    # A server with other lists: the console offers what /console/config says, nothing it remembers.
    _, config = server.request("GET", "/console/config")
    config["enums"]["decision"] = [v for v in config["enums"]["decision"] if v != "warn"] + ["quarantine"]
    config["filters"]["decisions"] = [f for f in config["filters"]["decisions"] if f != "rule_id"] + ["actor"]
    config["facet_fields"] = ["repository", "decision"]
    page.route(
        re.compile(r"/console/config$"),
        lambda route: route.fulfill(status=200, content_type="application/json", body=json.dumps(config)),
    )
    page.goto(server.url("/console"))
    expect(rows(page)).to_have_count(12)
    controls = filter_controls(page)
    assert set(controls) == set(config["filters"]["decisions"])
    assert sorted(controls["decision"]) == sorted(config["enums"]["decision"])
    expect(page.get_by_role("checkbox", name="Warn", exact=True)).to_have_count(0)
    expect(page.locator("#f-rule_id")).to_be_hidden()
    groups = page.locator("#facet-groups section")
    expect(groups).to_have_count(2)
    assert groups.evaluate_all("gs => gs.map(g => g.dataset.dim)") == ["repository", "decision"]
    # A filter the page has no field for gets a plain one, which filters like the others.
    page.get_by_text("Scope and tracing").click()
    page.locator("#filters").get_by_label("actor", exact=True).fill("someone")
    page.locator("#filters").get_by_label("actor", exact=True).press("Enter")
    expect_query(page, actor=["someone"])


def test_the_console_waits_for_its_config(page: Page, server: LiveServer) -> None:
    answers = iter([503])

    def flaky(route: Any) -> None:
        status = next(answers, None)
        if status is None:
            route.continue_()
        else:
            route.fulfill(status=status, content_type="application/json", body='{"detail": "starting up"}')

    page.route(re.compile(r"/console/config$"), flaky)
    page.goto(server.url("/console?decision=block"))
    error = page.locator("#error")
    expect(error).to_contain_text("The API failed (503)")
    expect(error).to_contain_text("starting up")
    error.get_by_role("button", name="Try again").click()
    expect_ids(page, ["dec-a3", "dec-b3", "dec-g3", "dec-g5"])
    expect(page.get_by_role("checkbox", name="Block", exact=True)).to_be_checked()
    expect(error).to_be_hidden()


def test_bookmarked_url_restores_the_view_and_history_walks_it(page: Page, server: LiveServer) -> None:
    page.goto(server.url("/console?decision=block&severity=high&range=7d"))
    expect_ids(page, ["dec-a3"])
    expect(page.get_by_role("checkbox", name="Block", exact=True)).to_be_checked()
    expect(page.get_by_role("checkbox", name="High", exact=True)).to_be_checked()
    expect(page.get_by_role("checkbox", name="Low", exact=True)).not_to_be_checked()
    expect(page.get_by_label("Time range")).to_have_value("7d")

    page.get_by_role("checkbox", name="High", exact=True).uncheck()
    expect_query(page, decision=["block"], range=["7d"])
    expect_ids(page, ["dec-a3", "dec-b3"])
    page.go_back()
    expect_query(page, decision=["block"], severity=["high"], range=["7d"])
    expect_ids(page, ["dec-a3"])
    expect(page.get_by_role("checkbox", name="High", exact=True)).to_be_checked()
    page.go_forward()
    expect_ids(page, ["dec-a3", "dec-b3"])

    page.goto(server.url("/console?view=sessions&state=completed&repository=acme/infra"))
    expect_ids(page, ["sess-gamma"])
    expect(page.get_by_role("checkbox", name="Completed", exact=True)).to_be_checked()
    expect(page.locator("#filters").get_by_label("Repository", exact=True)).to_have_value("acme/infra")


def test_cursor_paging(page: Page, server: LiveServer) -> None:
    page.goto(server.url("/console"))
    expect(rows(page)).to_have_count(12)
    page.get_by_label("Rows").select_option("10")
    expect_ids(page, ["dec-a4", "dec-a3", "dec-a2", "dec-a1", "dec-b3", "dec-b2", "dec-b1", "dec-g1", "dec-g2"]
               + ["dec-g3"])  # fmt: skip
    expect(page.locator("#summary")).to_have_text("Showing 1–10 of 12 decisions, newest first")
    expect(page.get_by_role("button", name="‹ Previous")).to_be_disabled()

    page.get_by_role("button", name="Next ›").click()
    expect_ids(page, ["dec-g4", "dec-g5"])
    assert parse_qs(urlsplit(page.url).query)["cursor"]
    expect(page.locator("#summary")).to_have_text("Showing 11–12 of 12 decisions, newest first")
    expect(page.get_by_role("button", name="Next ›")).to_be_disabled()

    page.get_by_role("button", name="‹ Previous").click()
    expect(rows(page)).to_have_count(10)
    expect_query(page, limit=["10"])
    page.get_by_role("button", name="Next ›").click()
    expect_ids(page, ["dec-g4", "dec-g5"])
    page.go_back()
    expect(rows(page)).to_have_count(10)

    # A relative range keeps its start while paging: the cursor is bound to the exact filter.
    page.goto(server.url("/console?range=7d&limit=5"))
    expect_ids(page, ["dec-a4", "dec-a3", "dec-a2", "dec-a1", "dec-b3"])
    page.get_by_role("button", name="Next ›").click()
    expect_ids(page, ["dec-b2", "dec-b1", "dec-g1", "dec-g2"])
    expect(page.locator("#error")).to_be_hidden()
    page.get_by_role("button", name="« Newest").click()
    expect_ids(page, ["dec-a4", "dec-a3", "dec-a2", "dec-a1", "dec-b3"])


def test_the_console_is_the_same_on_the_json_store(
    page: Page, server_loop: asyncio.AbstractEventLoop, tmp_path: Path
) -> None:
    json_server = seeded_server(server_loop, tmp_path / "activity.json")
    try:
        page.goto(json_server.url("/console?range=7d&limit=5"))
        expect(page.locator("#store-kind")).to_have_text("json")
        expect_ids(page, ["dec-a4", "dec-a3", "dec-a2", "dec-a1", "dec-b3"])
        page.get_by_role("button", name="Next ›").click()
        expect_ids(page, ["dec-b2", "dec-b1", "dec-g1", "dec-g2"])
        page.get_by_role("link", name="sess-beta").first.click()
        expect(page.locator("#timeline > li")).to_have_count(3)
    finally:
        json_server.stop()


def test_facet_click_filters_by_that_value(page: Page, server: LiveServer) -> None:
    page.goto(server.url("/console?repository=acme/api"))
    expect_ids(page, set(ALPHA))
    facets = page.locator("#facets")
    expect(facets).to_be_visible()
    outcome = facets.get_by_role("button", name=re.compile(r"^Outcome: .*Block\W+1 decisions"))
    expect(outcome).to_have_attribute("aria-pressed", "false")
    outcome.click()
    expect_query(page, repository=["acme/api"], decision=["block"])
    expect_ids(page, ["dec-a3"])
    expect(facets.get_by_role("button", name=re.compile(r"^Outcome: .*Block"))).to_have_attribute(
        "aria-pressed", "true"
    )
    # A second click on the same value removes it again.
    facets.get_by_role("button", name=re.compile(r"^Outcome: .*Block")).click()
    expect_query(page, repository=["acme/api"])
    expect_ids(page, set(ALPHA))


FACETS = {
    "total": 9,
    "top": 10,
    "facets": {
        "decision": [{"value": "allow", "count": 5}, {"value": "block", "count": 4}],
        # The API ranks values (most frequent first); records without a value count under null.
        "repository": [
            {"value": "acme/infra", "count": 5},
            {"value": "acme/api", "count": 3},
            {"value": None, "count": 1},
        ],
    },
}


def test_facet_sidebar_shows_the_counts_and_sends_the_filter(page: Page, server: LiveServer) -> None:
    # The sidebar's own behaviour: stubbed counts in the API's shape, real listings.
    asked: list[str] = []

    def fulfil(route: Any) -> None:
        asked.append(route.request.url)
        route.fulfill(status=200, content_type="application/json", body=json.dumps(FACETS))

    page.route(re.compile(r"/decisions/facets(\?|$)"), fulfil)
    page.goto(server.url("/console?range=7d"))
    facets = page.locator("#facets")
    expect(facets.get_by_role("button", name=re.compile(r"^Repository: acme\/infra 5 decisions"))).to_be_visible()
    repo_values = facets.locator('button[data-dim="repository"]').evaluate_all("bs => bs.map(b => b.dataset.value)")
    assert repo_values == ["acme/infra", "acme/api", ""]  # in the API's order
    expect(facets.get_by_role("button", name="Repository: (none) 1 decisions")).to_be_disabled()
    facets.get_by_role("button", name=re.compile(r"^Outcome: .*Block")).click()
    expect_query(page, decision=["block"], range=["7d"])
    expect_ids(page, ["dec-a3", "dec-b3"])
    facets.get_by_role("button", name=re.compile(r"^Repository: acme\/api")).click()
    expect_query(page, decision=["block"], range=["7d"], repository=["acme/api"])
    expect_ids(page, ["dec-a3"])
    # Facets are fetched after the rows; the pressed button shows that answer arrived.
    pressed = facets.get_by_role("button", name=re.compile(r"^Repository: acme\/api"))
    expect(pressed).to_have_attribute("aria-pressed", "true")
    last = parse_qs(urlsplit(asked[-1]).query)
    assert last["decision"] == ["block"] and last["repository"] == ["acme/api"] and last["since"]


def test_facet_sidebar_hides_itself_when_the_route_is_missing(page: Page, server: LiveServer) -> None:
    page.route(
        re.compile(r"/decisions/facets(\?|$)"),
        lambda route: route.fulfill(status=404, content_type="application/json", body='{"detail": "not found"}'),
    )
    page.goto(server.url("/console"))
    expect(rows(page)).to_have_count(12)
    expect(page.locator("#facets")).to_be_hidden()
    expect(page.locator("#error")).to_be_hidden()


def test_export_links_carry_the_current_filter(page: Page, server: LiveServer) -> None:
    page.goto(server.url("/console?decision=block&repository=acme/api&limit=10"))
    expect_ids(page, ["dec-a3"])
    for kind in ("csv", "ndjson"):
        href = page.get_by_role("link", name=kind.upper(), exact=True).get_attribute("href") or ""
        assert urlsplit(href).path == f"/decisions.{kind}"
        assert parse_qs(urlsplit(href).query) == {"decision": ["block"], "repository": ["acme/api"]}
    page.get_by_role("link", name="Sessions", exact=True).click()
    # The sessions list exports its own rows (/sessions.csv), with the filters it shares.
    expect(page.locator("#export-csv")).to_have_attribute("href", "/sessions.csv?repository=acme%2Fapi")
    expect(page.locator("#export-ndjson")).to_have_attribute("href", "/sessions.ndjson?repository=acme%2Fapi")


def test_export_downloads_hold_the_filtered_rows(page: Page, server: LiveServer) -> None:
    page.goto(server.url("/console?decision=block"))
    expect(rows(page)).to_have_count(4)
    with page.expect_download() as download:
        page.get_by_role("link", name="CSV", exact=True).click()
    table = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert sorted(r["decision_id"] for r in table) == ["dec-a3", "dec-b3", "dec-g3", "dec-g5"]
    with page.expect_download() as download:
        page.get_by_role("link", name="NDJSON", exact=True).click()
    lines = [json.loads(line) for line in Path(download.value.path()).read_text().splitlines() if line]
    assert sorted(r["decision_id"] for r in lines) == ["dec-a3", "dec-b3", "dec-g3", "dec-g5"]
    assert {r["decision"] for r in lines} == {"block"}


def test_session_page_shows_summary_and_timeline_in_time_order(page: Page, server: LiveServer) -> None:
    page.goto(server.url("/console?repository=acme/web"))
    expect_ids(page, BETA[::-1])
    # A decision row links to its session, opening that decision in the timeline.
    rows(page).first.get_by_role("link", name="sess-beta").click()
    expect_query(page, view=["session"], id=["sess-beta"], detail=["dec-b3"])
    timeline = page.locator("#timeline > li")
    expect(timeline).to_have_count(3)
    assert timeline.evaluate_all("items => items.map(i => i.dataset.id)") == BETA
    expect(page.locator("#d-dec-b3 > details")).to_have_attribute("open", "")

    page.goto(server.url("/console?view=session&id=sess-alpha"))
    expect(timeline).to_have_count(4)
    assert timeline.evaluate_all("items => items.map(i => i.dataset.id)") == ALPHA
    times = timeline.locator("time").evaluate_all("ts => ts.map(t => t.getAttribute('datetime'))")
    assert times == sorted(times)
    summary = page.locator("#session-summary")
    expect(summary.locator(".field-decision_count dd")).to_have_text("4")
    expect(summary.locator(".field-blocked_count dd")).to_have_text("1")
    expect(summary.locator(".field-approval_required_count dd")).to_have_text("1")
    expect(summary.locator(".field-repository dd")).to_have_text("acme/api")

    blocked = page.locator("#d-dec-a3")
    expect(blocked.locator("[data-field=reason] dd")).to_be_hidden()
    blocked.locator("> details > summary").click()  # one click to the full record
    expect(blocked.locator("[data-field=reason] dd")).to_have_text("Destructive shell command outside the workspace")
    expect(blocked.get_by_role("link", name="https://ci.example.com/runs/42")).to_have_attribute(
        "href", "https://ci.example.com/runs/42"
    )
    expect(blocked.locator("[data-field=evidence_refs]")).to_contain_text("sha256:9f2c")
    expect(blocked.locator("[data-field=context] pre")).to_contain_text('"cwd": "/srv/api"')
    screenshot(page, "console-session.png")

    page.get_by_role("link", name="Open in decisions table").click()
    expect_query(page, session_id=["sess-alpha"])
    expect_ids(page, ALPHA[::-1])


def test_long_timelines_load_later_decisions_on_demand(page: Page, own_server: LiveServer) -> None:
    start = datetime.now(UTC) - timedelta(hours=1)
    steps = [
        {"session_id": "sess-long", "decision_id": f"dec-long-{n:04d}", "decision": "allow", "timestamp": moment}
        for n, moment in enumerate((start + timedelta(seconds=n)).isoformat() for n in range(503))
    ]
    own_server.post("/decisions", steps)
    page.goto(own_server.url("/console?view=session&id=sess-long"))
    timeline = page.locator("#timeline > li")
    expect(timeline).to_have_count(500)  # the API's default timeline page
    expect(timeline.last).to_have_attribute("data-id", "dec-long-0499")
    page.get_by_role("button", name="Load later decisions").click()
    expect(timeline).to_have_count(503)
    expect(timeline.last).to_have_attribute("data-id", "dec-long-0502")
    expect(page.get_by_role("button", name="Load later decisions")).to_be_hidden()


def test_decision_detail_opens_by_keyboard_and_closes_with_escape(page: Page, server: LiveServer) -> None:
    page.goto(server.url("/console"))
    expect(rows(page)).to_have_count(12)
    rows(page).first.get_by_role("link").first.focus()
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name="Decision dec-a4")
    expect(dialog).to_be_visible()
    expect_query(page, detail=["dec-a4"])
    expect(dialog.locator("[data-field=approver_group] dd")).to_have_text("release-managers")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect_query(page)
    # A bookmarked detail opens straight away.
    page.goto(server.url("/console?detail=dec-b3"))
    expect(page.get_by_role("dialog", name="Decision dec-b3")).to_be_visible()
    page.get_by_role("button", name="Close").click()
    expect_query(page)


def test_new_decisions_arrive_live_and_pausing_holds_them(page: Page, own_server: LiveServer) -> None:
    server = own_server
    page.clock.install()
    page.goto(server.url("/console"))
    expect(rows(page)).to_have_count(12)
    fresh = {"session_id": "sess-alpha", "repository": "acme/api", "decision": "block", "severity": "high"}
    server.post("/decisions", {**fresh, "decision_id": "dec-live-1", "timestamp": datetime.now(UTC).isoformat()})
    page.clock.run_for(3_500)
    expect(rows(page).first).to_have_attribute("data-id", "dec-live-1")
    expect(rows(page).first).to_have_class(re.compile(r"\bfresh\b"))
    expect(page.locator("#summary")).to_contain_text("of 13 decisions")

    toggle = page.get_by_role("button", name="Live")
    toggle.click()
    expect(page.get_by_role("button", name="Paused")).to_have_attribute("aria-pressed", "false")
    expect(page.locator("#live-status")).to_contain_text("Paused")
    server.post("/decisions", {**fresh, "decision_id": "dec-live-2", "timestamp": datetime.now(UTC).isoformat()})
    page.clock.run_for(10_000)
    assert rows(page).count() == 13  # paused: nothing new is loaded
    page.get_by_role("button", name="Paused").click()
    expect(rows(page).first).to_have_attribute("data-id", "dec-live-2")

    # The session page follows its session too: new decisions land at the end of the timeline.
    page.goto(server.url("/console?view=session&id=sess-alpha"))
    expect(page.locator("#timeline > li")).to_have_count(6)
    server.post("/decisions", {**fresh, "decision_id": "dec-live-3", "timestamp": datetime.now(UTC).isoformat()})
    page.clock.run_for(3_500)
    expect(page.locator("#timeline > li")).to_have_count(7)
    expect(page.locator("#timeline > li").last).to_have_attribute("data-id", "dec-live-3")
    expect(page.locator("#session-summary .field-decision_count dd")).to_have_text("7")


def test_no_match_shows_the_empty_state(page: Page, server: LiveServer) -> None:
    page.goto(server.url("/console?repository=no/such-repo"))
    empty = page.locator("#empty")
    expect(empty).to_be_visible()
    expect(empty).to_contain_text("Nothing matches these filters.")
    expect(page.locator("#results-wrap")).to_be_hidden()
    expect(page.locator("#summary")).to_have_text("No decisions match.")
    empty.get_by_role("button", name="Clear filters").click()
    expect_ids(page, ALL)


def test_bad_filter_shows_the_api_detail(page: Page, server: LiveServer) -> None:
    page.goto(server.url("/console?decision=bogus"))
    error = page.locator("#error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("The API rejected this view's filters")
    expect(error).to_contain_text("decision must be one of allow, block")
    expect(error).to_contain_text("(parameter: decision)")
    expect(page.locator("#results-wrap")).to_be_hidden()
    error.get_by_role("button", name="Clear filters").click()
    expect_ids(page, ALL)
    expect(error).to_be_hidden()

    page.goto(server.url("/console?range=custom&since=yesterday"))
    expect(error).to_contain_text("since must be an RFC 3339 date-time")
    page.goto(server.url("/console?view=session&id=no-such-session"))
    expect(error).to_contain_text("session not found")


def test_api_down_shows_an_error_and_keeps_the_last_rows(page: Page, own_server: LiveServer) -> None:
    server = own_server
    page.clock.install()
    page.goto(server.url("/console"))
    expect(rows(page)).to_have_count(12)
    server.stop()
    page.clock.run_for(3_500)
    error = page.locator("#error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("Cannot reach the API")
    expect(error).to_contain_text("Showing what was loaded at")
    expect(rows(page)).to_have_count(12)
    expect(page.locator("#live-status")).to_contain_text("Cannot reach the API")
    error.get_by_role("button", name="Try again").click()
    expect(page.locator("#results-wrap")).to_be_hidden()
    expect(error).to_contain_text("Cannot reach the API")
    screenshot(page, "console-api-down.png")


@pytest.mark.parametrize("width", [1280, 1920])
def test_fits_laptop_and_wide_screens(page: Page, server: LiveServer, width: int) -> None:
    page.set_viewport_size({"width": width, "height": 800})
    page.goto(server.url("/console"))
    expect(rows(page)).to_have_count(12)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    wrap = page.locator("#results-wrap")
    assert wrap.evaluate("w => w.scrollWidth <= w.clientWidth"), "decisions table needs a horizontal scrollbar"
    page.goto(server.url("/console?view=sessions"))
    expect(rows(page)).to_have_count(3)
    assert wrap.evaluate("w => w.scrollWidth <= w.clientWidth"), "sessions table needs a horizontal scrollbar"


def test_bidi_and_invisible_characters_are_shown_and_state_changes_listed(page: Page, own_server: LiveServer) -> None:
    """`rm -rf /\u202e;gnp.exe` must not render as `rm -rf /exe.png;`; look-alike ids are marked (issue 18)."""
    now = datetime.now(UTC).isoformat()
    tricky = {"decision": "block", "decision_id": "dec-bidi", "session_id": "sess-\u200bdelta", "timestamp": now}
    own_server.post("/decisions", [tricky | {"target": "rm -rf /\u202e;gnp.exe", "repository": "acme/bidi"}])
    own_server.post("/sessions", {"session_id": "sess-\u200bdelta", "state": "completed"})
    page.goto(own_server.url("/console?repository=acme/bidi"))
    expect_ids(page, ["dec-bidi"])
    target = rows(page).first.locator(".col-target .clip")
    expect(target).to_have_text("rm -rf /⟦U+202E⟧;gnp.exe")
    expect(target).to_have_class(re.compile(r"\bdeceptive\b"))
    session = rows(page).first.get_by_role("link", name=re.compile("sess-"))
    expect(session).to_have_text("sess-⟦U+200B⟧delta")
    expect(session).to_have_class(re.compile(r"\bdeceptive\b"))
    page.goto(own_server.url("/console?view=session&id=sess-%E2%80%8Bdelta"))
    history = page.locator("#session-summary .state-history li")
    expect(history).to_have_count(1)
    expect(history.first).to_contain_text(re.compile(r"Active → .?Completed by peer:127\.0\.0\.1"))


def test_docs_page_runs_under_its_content_security_policy(page: Page, server: LiveServer) -> None:
    """/docs has an inline script and style, allowed by hash only; a CSP violation fails the page fixture."""
    page.goto(server.url("/docs"))
    expect(page.locator("#description")).not_to_have_text(re.compile("Loading|Could not"))


# ---- investigations: search, the chart over time, accessibility (issue 15) ----

AXE = Path(__file__).resolve().parents[1] / "vendor" / "axe.min.js"


def serious_violations(page: Page) -> list[str]:
    """Run axe-core (vendored into the tests, never served) on the page; return serious and critical findings."""
    # Evaluated over the DevTools protocol: the page's own CSP, which would refuse an injected script, stays on.
    if not page.evaluate("typeof window.axe === 'object'"):
        page.evaluate(AXE.read_text())
    found = page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
        ".filter(v => v.impact === 'serious' || v.impact === 'critical')"
        ".map(v => v.id + ': ' + v.nodes.map(n => n.target.join(' ')).slice(0, 3).join(', '))"
    )
    return list(found)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_console_page_passes_axe(browser: Browser, server: LiveServer, scheme: str) -> None:
    context = browser.new_context(viewport={"width": 1440, "height": 900}, color_scheme=scheme)
    page = context.new_page()
    try:
        page.goto(server.url("/console?q=.env"))
        expect_ids(page, ["dec-b3"])
        expect(page.locator("#histogram")).to_be_visible()
        assert serious_violations(page) == []
        page.goto(server.url("/console"))
        expect(rows(page)).to_have_count(12)
        expect(page.locator("#facets")).to_be_visible()
        assert serious_violations(page) == []
        page.goto(server.url("/console?view=sessions"))
        expect(rows(page)).to_have_count(3)
        assert serious_violations(page) == []
        page.goto(server.url("/console?view=session&id=sess-alpha"))
        expect(page.locator("#timeline > li")).to_have_count(4)
        assert serious_violations(page) == []
        page.goto(server.url("/console?detail=dec-a3"))
        expect(page.locator("#detail")).to_be_visible()
        assert serious_violations(page) == []
    finally:
        context.close()


def test_search_box_finds_substrings_and_lands_in_the_url(page: Page, server: LiveServer) -> None:
    page.goto(server.url("/console"))
    expect(rows(page)).to_have_count(12)
    page.get_by_label("Search", exact=True).fill('"push --force"')
    page.get_by_label("Search", exact=True).press("Enter")
    expect_ids(page, ["dec-a4"])
    expect_query(page, q=['"push --force"'])
    assert "q=%22push" in page.locator("#export-csv").get_attribute("href")
    page.go_back()
    expect(rows(page)).to_have_count(12)
    expect(page.get_by_label("Search", exact=True)).to_have_value("")


def test_histogram_zooms_by_drag_and_keyboard_and_back_undoes_it(page: Page, server: LiveServer) -> None:
    page.goto(server.url("/console?repository=acme/api"))
    expect_ids(page, ["dec-a4", "dec-a3", "dec-a2", "dec-a1"])
    plot = page.locator("#histogram-plot")
    expect(plot.locator("rect.hb").first).to_be_attached()
    box = plot.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] / 2, steps=4)
    page.mouse.up()
    page.wait_for_function("new URLSearchParams(location.search).get('range') === 'custom'")
    query = parse_qs(urlsplit(page.url).query)
    assert query["repository"] == ["acme/api"] and query["since"] and query["until"]
    assert query["since"][0] < query["until"][0]
    page.go_back()
    page.wait_for_function("!new URLSearchParams(location.search).has('since')")
    expect(rows(page)).to_have_count(4)
    # Keyboard only: focus the chart, pick the last bar, widen the pick by one, zoom.
    expect(plot.locator("rect.hb").first).to_be_attached()
    plot.focus()
    page.keyboard.press("End")
    expect(page.locator("#histogram-focus")).to_contain_text("to")
    page.keyboard.press("Shift+ArrowLeft")
    page.keyboard.press("Enter")
    page.wait_for_function("new URLSearchParams(location.search).get('range') === 'custom'")
    expect(rows(page)).not_to_have_count(0)


def test_facets_show_more_and_count_what_is_hidden(page: Page, own_server: LiveServer) -> None:
    own_server.post(
        "/decisions", [{"decision": "allow", "session_id": "s-many", "repository": f"acme/r{n:02d}"} for n in range(30)]
    )
    page.goto(own_server.url("/console"))
    group = page.locator('.facet-group[data-dim="repository"]')
    expect(group.locator("button.facet")).to_have_count(5)
    more = group.get_by_role("button", name=re.compile(r"^Show \d+ more$"))
    expect(more).to_be_visible()
    # 33 repositories, 25 fetched: the rest are counted, not dropped silently.
    expect(group.locator(".facet-rest")).to_contain_text("more in other values")
    more.click()
    expect(group.locator("button.facet")).to_have_count(25)


def test_first_run_says_how_to_send_the_first_decision(
    page: Page, server_loop: asyncio.AbstractEventLoop, tmp_path: Path
) -> None:
    live = LiveServer(server_loop, tmp_path / "empty.db").start()
    try:
        page.goto(live.url("/console"))
        first = page.locator("#first-run")
        expect(first).to_be_visible()
        expect(page.locator("#empty")).to_be_hidden()
        expect(page.locator("#first-run-command")).to_contain_text(f"curl -s {live.base}/decisions")
        screenshot(page, "console-first-run.png")
        # The command works as shown: the decision it sends appears by itself.
        live.post("/decisions", {"decision": "block", "session_id": "sess-1", "decision_id": "dec-first"})
        expect_ids(page, ["dec-first"])
        expect(first).to_be_hidden()
    finally:
        live.stop()


def test_long_identifiers_are_never_clipped(page: Page, own_server: LiveServer) -> None:
    long_rule = "git.no_force_push_to_protected_release_branches"
    long_session = "sess-1129-" + "x" * 40
    own_server.post(
        "/decisions", {"decision": "block", "session_id": long_session, "rule_id": long_rule, "decision_id": "dec-long"}
    )
    page.set_viewport_size({"width": 1400, "height": 900})
    page.goto(own_server.url("/console?session_id=" + long_session))
    expect_ids(page, ["dec-long"])
    for text in (long_rule, long_session):
        cell = page.locator("#results-body td", has_text=text).first
        # The whole value is laid out: nothing overflows its box and is hidden.
        assert cell.evaluate("td => [...td.querySelectorAll('*')].every(n => n.scrollWidth <= n.clientWidth + 1)")
        expect(cell).to_contain_text(text)


def test_session_page_filters_to_non_allow_and_exports(page: Page, server: LiveServer) -> None:
    page.goto(server.url("/console?view=session&id=sess-alpha"))
    items = page.locator("#timeline > li")
    expect(items).to_have_count(4)
    expect(page.locator("#session-duration")).to_have_text(re.compile(r"^Duration 1[45]m"))
    page.get_by_label("Only decisions that were not allowed").check()
    expect(page.locator("#timeline > li:visible")).to_have_count(3)
    assert page.locator("#session-export-csv").get_attribute("href") == "/decisions.csv?session_id=sess-alpha"
    link = page.locator('#session-summary a[href="https://ci.example.com/runs/42"]')
    expect(link).to_have_attribute("rel", "noopener noreferrer")


def test_times_switch_between_utc_and_local(browser: Browser, server: LiveServer) -> None:
    context = browser.new_context(viewport={"width": 1440, "height": 900}, timezone_id="Asia/Kolkata")
    page = context.new_page()
    try:
        page.goto(server.url("/console?view=session&id=sess-alpha"))
        first = page.locator("#timeline time").first
        expect(first).to_be_visible()
        utc = first.inner_text()
        page.get_by_label("Times in").select_option("local")
        expect(page.locator("#timeline time").first).not_to_have_text(utc)
        page.reload()
        expect(page.get_by_label("Times in")).to_have_value("local")
    finally:
        context.close()


def test_local_time_tooltips_and_counts_need_no_locale_formatter_to_draw(browser: Browser, server: LiveServer) -> None:
    # The first locale-aware format in a page costs 15-30 ms: the first page is drawn without one, the local
    # time is the tooltip's once the pointer reaches a time, and counts are grouped as toLocaleString("en") would.
    context = browser.new_context(viewport={"width": 1440, "height": 900}, timezone_id="Asia/Kolkata")
    context.add_init_script(
        "window.localeCalls = 0; for (const proto of [Date.prototype, Number.prototype]) {"
        " const own = proto.toLocaleString; proto.toLocaleString = function (...args) {"
        " window.localeCalls += 1; return own.apply(this, args); }; }"
        " const Format = Intl.DateTimeFormat; Intl.DateTimeFormat = function (...args) {"
        " window.localeCalls += 1; return new Format(...args); };"
    )
    page = context.new_page()
    try:
        page.goto(server.url("/console"))
        expect(page.locator("#facet-groups button.facet").first).to_be_visible()
        expect(page.locator("#summary")).not_to_be_empty()
        assert page.evaluate("window.localeCalls") == 0
        time_el = page.locator("#results-body time").first
        assert time_el.get_attribute("title") is None
        time_el.hover()
        stored = time_el.get_attribute("datetime")
        expected = page.evaluate("(iso) => `Your local time: ${new Date(iso).toLocaleString()}`", stored)
        expect(time_el).to_have_attribute("title", expected)
        grouped = page.evaluate(
            "import('/console/static/render.js').then(({ grouped }) =>"
            " [0, 7, 999, 1000, 65536, 1234567, -1234, 1.5].map((n) => [grouped(n), n.toLocaleString('en')]))"
        )
        assert all(ours == theirs for ours, theirs in grouped), grouped
    finally:
        context.close()


API_CALLS = (
    "performance.getEntriesByType('resource').filter(e => e.initiatorType === 'fetch')"
    ".map(e => e.name.replace(location.origin, ''))"
)


@pytest.mark.parametrize("view", ["", "?decision=block&repository=acme/api"])
def test_a_new_page_asks_for_its_page_and_facets_together_and_once_each(
    page: Page, server: LiveServer, view: str
) -> None:
    # app.js starts these calls before the views load; the views take its answers instead of asking again,
    # and the facets are asked for with the page, not after it was drawn.
    page.add_init_script(
        "new MutationObserver((_, observer) => { if (document.querySelector('#results-body tr')) {"
        " window.drawnAt = performance.now(); observer.disconnect(); } })"
        ".observe(document, { childList: true, subtree: true });"
    )
    if not view:
        # The config answers 0.3 s late: the default view's calls must not wait for it (a config answered in
        # half a millisecond can end before the next call is even made, whatever the page does).
        page.route("**/console/config", lambda route: (time.sleep(0.3), route.continue_()))
    page.goto(server.url(f"/console{view}"))
    expect(page.locator("#facet-groups button.facet").first).to_be_visible()
    expect(page.locator("#histogram rect.hb").first).to_be_attached()
    # A live poll (`count=false`) may come on a slow machine; every other call is made once.
    calls = [url.split("?")[0] for url in page.evaluate(API_CALLS) if "count=false" not in url]
    assert sorted(calls) == ["/console/config", "/decisions", "/decisions/facets", "/decisions/histogram"]
    timings = page.evaluate(
        "Object.fromEntries(performance.getEntriesByType('resource')"
        ".filter(e => e.initiatorType === 'fetch' && !e.name.includes('count=false'))"
        ".map(e => [e.name.replace(location.origin, '').split('?')[0], [e.startTime, e.responseEnd]]))"
    )
    # Asked before the table was drawn (not "before the page's answer ended": on a busy machine a fast
    # answer can end while the second call is still being made).
    assert timings["/decisions/facets"][0] < page.evaluate("window.drawnAt")
    # The chart waits for the page and facets: on a busy server it would only slow them down.
    assert timings["/decisions/histogram"][0] > timings["/decisions"][1]
    if not view:
        # The default view needs nothing from the config to be asked for: it does not wait for it.
        assert timings["/decisions"][0] < timings["/console/config"][1]
