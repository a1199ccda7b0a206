"""The console's HTTP side: redirects, static files, content types, cache and security headers."""

from __future__ import annotations

import pytest

from cavra_ingest.console import STATIC

ASSETS = {
    "app.js": "text/javascript",
    "api.js": "text/javascript",
    "state.js": "text/javascript",
    "render.js": "text/javascript",
    "evidence.js": "text/javascript",
    "style.css": "text/css",
    "favicon.svg": "image/svg+xml",
}


@pytest.mark.parametrize("path", ["/", "/console/"])
async def test_entry_points_redirect_to_console(client, path):
    response = await client.get(path, allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"] == "/console"


async def test_redirect_keeps_the_query(client):
    response = await client.get("/?view=sessions&state=active", allow_redirects=False)
    assert response.headers["Location"] == "/console?view=sessions&state=active"


async def test_console_page_is_html_that_revalidates(client):
    response = await client.get("/console?view=sessions")
    assert response.status == 200
    assert response.content_type == "text/html"
    assert response.charset == "utf-8"
    assert response.headers["Cache-Control"] == "no-cache"
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    text = await response.text()
    assert '<script type="module" src="/console/static/app.js"></script>' in text


@pytest.mark.parametrize(("name", "content_type"), sorted(ASSETS.items()))
async def test_assets_have_their_content_type_and_an_etag(client, name, content_type):
    response = await client.get(f"/console/static/{name}")
    assert response.status == 200
    assert response.content_type == content_type
    assert response.headers["Cache-Control"] == "no-cache"
    assert await response.read() == (STATIC / name).read_bytes()
    again = await client.get(f"/console/static/{name}", headers={"If-None-Match": response.headers["ETag"]})
    assert again.status == 304


async def test_every_vendored_file_is_listed_here():
    # A new static file must get a content type in console.CONTENT_TYPES and a line in ASSETS.
    assert {p.name for p in STATIC.iterdir()} == set(ASSETS) | {"index.html"}


@pytest.mark.parametrize(
    "path", ["/console/static/missing.js", "/console/static/.hidden.js", "/console/static/..%2F__init__.py"]
)
async def test_unknown_assets_are_json_404s(client, path):
    response = await client.get(path)
    assert response.status == 404
    body = await response.json()
    assert body["status"] == 404 and body["detail"]


async def test_module_files_outside_static_are_not_served(client):
    response = await client.get("/console/static/__init__.py")
    assert response.status == 404


async def test_api_routes_under_console_still_answer(client):
    response = await client.get("/console/config")
    assert response.status == 200
    assert (await response.json())["activity_mode"] == "sqlite"


async def test_head_is_answered_without_a_body(client):
    response = await client.head("/console/static/app.js")
    assert response.status == 200
    assert response.content_type == "text/javascript"
    assert await response.read() == b""
