"""CORS in a real browser: a page on a second loopback origin reads the API with an Authorization header."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from cavra_ingest.http.app import create_app
from cavra_ingest.settings import Settings
from tests.conftest import decision
from tests.console_browser import CHROMIUM, CHROMIUM_ARGS, require_browser, start_loop, stop_loop

PAGE = "<!doctype html><title>console elsewhere</title><p>a page on another origin</p>"
# Runs in the page: a credentialed read with a bearer token (so the browser sends a preflight first).
FETCH = """async ([url, method]) => {
  try {
    const init = {method, headers: {Authorization: 'Bearer t0ken'}, credentials: 'include'};
    if (method === 'POST') { init.body = '{}'; init.headers['Content-Type'] = 'application/json'; }
    const response = await fetch(url, init);
    return {status: response.status, body: await response.json()};
  } catch (error) {
    return {error: String(error)};
  }
}"""


async def start(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, shutdown_timeout=5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def page(_: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html")


def page_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/", page)
    return app


@pytest.fixture
def origins(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """An allowed page origin, a stranger's, and the API allowing only the first."""
    require_browser()
    loop, thread = start_loop()

    def run(coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=30)

    allowed, allowed_url = run(start(page_app()))
    stranger, stranger_url = run(start(page_app()))
    api_app = create_app(Settings.of(activity_db=str(tmp_path / "activity.db"), cors_origins=allowed_url))
    api, api_url = run(start(api_app))
    try:
        yield {"allowed": allowed_url, "stranger": stranger_url, "api": api_url, "run": run}
    finally:
        for runner in (api, stranger, allowed):
            run(runner.cleanup())
        stop_loop(loop, thread)


@pytest.mark.slow
def test_a_console_on_an_allowed_origin_reads_and_others_cannot(origins: dict[str, Any]) -> None:
    import json
    import urllib.request

    from playwright.sync_api import sync_playwright

    body = json.dumps(decision(decision_id="dec-cors", severity="high")).encode()
    request = urllib.request.Request(origins["api"] + "/decisions", data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(origins["allowed"] + "/")
            read = page.evaluate(FETCH, [origins["api"] + "/decisions?severity=high", "GET"])
            assert read.get("status") == 200, read
            assert [item["decision_id"] for item in read["body"]["items"]] == ["dec-cors"]
            config = page.evaluate(FETCH, [origins["api"] + "/console/config", "GET"])
            assert config["body"]["metadata_mode"] == "api" and config["body"]["api_base_url"] == origins["api"]
            # Writes stay same-origin: the preflight is refused, the browser never sends the POST.
            write = page.evaluate(FETCH, [origins["api"] + "/decisions", "POST"])
            assert "error" in write, write
            page.goto(origins["stranger"] + "/")
            refused = page.evaluate(FETCH, [origins["api"] + "/decisions", "GET"])
            assert "error" in refused, refused
        finally:
            browser.close()
