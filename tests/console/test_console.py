"""The console's HTTP side: redirects, static files, content types, cache and security headers."""

from __future__ import annotations

import re

import pytest

from cavra_ingest import console
from cavra_ingest.console import STATIC
from cavra_ingest.core.models import OUTCOMES, SESSION_STATES, SEVERITIES
from cavra_ingest.store.base import DECISION_FILTERS, FACET_FIELDS, SESSION_FILTERS

ASSETS = {
    "app.js": "text/javascript",
    "early.js": "text/javascript",
    "api.js": "text/javascript",
    "filters.js": "text/javascript",
    "list.js": "text/javascript",
    "render.js": "text/javascript",
    "session.js": "text/javascript",
    "state.js": "text/javascript",
    "status.js": "text/javascript",
    "evidence.js": "text/javascript",
    "histogram.js": "text/javascript",
    "sessiontools.js": "text/javascript",
    "sinks.js": "text/javascript",
    "sinks.html": "text/html",
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


@pytest.mark.slow
@pytest.mark.parametrize(("name", "content_type"), sorted(ASSETS.items()))
async def test_assets_have_their_content_type_and_an_etag(client, name, content_type):
    response = await client.get(f"/console/static/{name}")
    assert response.status == 200
    assert response.content_type == content_type
    assert response.headers["Cache-Control"] == "no-cache"
    assert await response.read() == (STATIC / name).read_bytes()
    again = await client.get(f"/console/static/{name}", headers={"If-None-Match": response.headers["ETag"]})
    assert again.status == 304


async def test_an_edited_asset_is_served_as_it_now_is(client, tmp_path, monkeypatch):
    # Files are answered from memory; a changed file (another size or time) is read again, with a new ETag.
    monkeypatch.setattr(console, "STATIC", tmp_path)
    (tmp_path / "app.js").write_text("export const a = 1;\n")
    first = await client.get("/console/static/app.js")
    assert await first.text() == "export const a = 1;\n"
    (tmp_path / "app.js").write_text("export const a = 12;\n")
    second = await client.get("/console/static/app.js", headers={"If-None-Match": first.headers["ETag"]})
    assert second.status == 200
    assert await second.text() == "export const a = 12;\n"
    assert second.headers["ETag"] != first.headers["ETag"]
    # A weak validator of the same bytes still matches (a proxy may weaken it); so does "*".
    for asked in (f"W/{second.headers['ETag']}", '"other", ' + second.headers["ETag"], "*"):
        again = await client.get("/console/static/app.js", headers={"If-None-Match": asked})
        assert again.status == 304
        assert again.headers["Content-Security-Policy"] == second.headers["Content-Security-Policy"]


async def test_every_vendored_file_is_listed_here():
    # A new static file must get a content type in console.CONTENT_TYPES and a line in ASSETS.
    assert {p.name for p in STATIC.iterdir()} == set(ASSETS) | {"index.html"}


def reach(imports: dict[str, set[str]], start: str) -> set[str]:
    reached, todo = set(), [start]
    while todo:
        name = todo.pop()
        assert name in imports, f"{name} is imported but missing"
        if name not in reached:
            reached.add(name)
            todo.extend(imports[name])
    return reached


def test_every_module_is_imported_by_name_and_preloaded():
    # The static route serves flat names only; index.html preloads the whole graph app.js imports, and only
    # it: the session view's and the chart's modules are imported when first needed, after the first paint.
    sources = {p.name: p.read_text() for p in STATIC.glob("*.js")}
    imports = {
        name: set(re.findall(r'^import .* from "\./([A-Za-z0-9_.-]+)";$', text, re.MULTILINE))
        for name, text in sources.items()
    }
    later = {name: set(re.findall(r'import\("\./([A-Za-z0-9_.-]+)"\)', text)) for name, text in sources.items()}
    reached = reach(imports, "app.js")
    deferred = set().union(*later.values())
    assert deferred == {"session.js", "sessiontools.js", "evidence.js", "histogram.js"}
    assert not deferred & reached, "a deferred module is also imported up front"
    every = set().union(*(reach(imports, name) for name in deferred))
    # What the deferred modules import is the up-front graph or one another: all fetched at once.
    assert every - reached <= deferred
    # sinks.js is the entry of its own page (sinks.html) and imports nothing.
    assert imports["sinks.js"] == set()
    assert reached | deferred | {"sinks.js"} == set(imports), "modules nothing imports"
    page = (STATIC / "index.html").read_text()
    # early.js is also a script of its own, async and first in the head: it imports nothing, so it runs (and
    # makes the first API calls) as soon as it arrives, before the rest of the graph.
    assert '<script type="module" async src="/console/static/early.js"></script>' in page
    assert imports["early.js"] == set()
    preloaded = re.findall(r'<link rel="modulepreload" href="/console/static/([^"]+)">', page)
    assert set(preloaded) == reached - {"app.js", "early.js"}


def test_the_early_calls_are_the_ones_the_views_make():
    # early.js cannot import the views' code; its copies of their defaults are checked here (the browser test
    # `test_a_new_page_asks_for_its_page_and_facets_together_and_once_each` checks the URLs end to end).
    early = (STATIC / "early.js").read_text()
    assert 'const TOKEN_KEY = "cavra.token";' in early
    assert 'const KEY = "cavra.token";' in (STATIC / "api.js").read_text()
    assert "default_limit: 50," in (STATIC / "state.js").read_text()
    assert "export const FACET_VALUES = 25;" in (STATIC / "state.js").read_text()
    assert 'DEFAULT_CALLS = ["/decisions?limit=50", "/decisions/facets?top=25"]' in early


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


async def test_config_lists_are_the_servers_own(client):
    # The console has no copies of these: its filter form, choices and facet sidebar come from here.
    body = await (await client.get("/console/config")).json()
    assert body["filters"] == {"decisions": list(DECISION_FILTERS), "sessions": [*SESSION_FILTERS, "min_blocked"]}
    assert body["enums"] == {"decision": list(OUTCOMES), "severity": list(SEVERITIES), "state": list(SESSION_STATES)}
    assert body["facet_fields"] == list(FACET_FIELDS)
    assert set(body["enums"]) <= set(body["filters"]["decisions"]) | set(body["filters"]["sessions"])
    assert set(body["facet_fields"]) <= set(body["filters"]["decisions"])


async def test_head_is_answered_without_a_body(client):
    response = await client.head("/console/static/app.js")
    assert response.status == 200
    assert response.content_type == "text/javascript"
    assert await response.read() == b""
