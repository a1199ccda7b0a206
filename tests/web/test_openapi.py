"""The OpenAPI document describes exactly the routes the app serves; /docs renders it offline."""

from __future__ import annotations

import asyncio
import re
import shutil
from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestClient

from cavra_ingest.core.models import DecisionIn, SessionIn
from cavra_ingest.http import openapi
from tests.conftest import decision


async def test_every_registered_route_is_described_and_vice_versa(client: TestClient) -> None:
    served = openapi.registered(client.app)
    assert served, "the router exposes no routes?"
    assert served <= set(openapi.OPERATIONS), f"undescribed routes: {served - set(openapi.OPERATIONS)}"
    # A description with no route is only allowed for routes another branch adds.
    assert set(openapi.OPERATIONS) == served
    document = await (await client.get("/openapi.json")).json()
    listed = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    assert listed == served


def test_console_pages_and_head_are_not_api_routes() -> None:
    assert not openapi.described("GET", "/console")
    assert not openapi.described("GET", "/")
    assert not openapi.described("GET", "/console/sessions/x")
    assert not openapi.described("HEAD", "/decisions")
    assert openapi.described("GET", "/console/config")


async def test_every_schema_reference_resolves(client: TestClient) -> None:
    document = await (await client.get("/openapi.json")).json()
    text = msgspec.json.encode(document).decode()
    names = set(re.findall(r'"\$ref":"#/components/schemas/([^"]+)"', text))
    assert names and names <= set(document["components"]["schemas"])
    assert document["openapi"].startswith("3.1")


async def test_error_statuses_the_handlers_return_are_documented(client: TestClient) -> None:
    """Each status produced here for POST /decisions appears in its responses, with the Error schema fitting."""
    document = await (await client.get("/openapi.json")).json()
    documented = document["paths"]["/decisions"]["post"]["responses"]
    cases = [
        ({"json": decision()}, "200"),
        ({"json": [decision(), decision(decision="nope")]}, "207"),
        ({"data": b"{", "headers": {"Content-Type": "application/json"}}, "400"),
        ({"data": b"{}", "headers": {"Content-Type": "text/plain"}}, "415"),
        ({"json": decision(decision="nope")}, "422"),
        ({"json": [decision(decision="nope")]}, "422"),
    ]
    error_fields = set(document["components"]["schemas"]["Error"]["required"])
    for kwargs, status in cases:
        response = await client.post("/decisions", **kwargs)
        assert str(response.status) == status and status in documented
        if response.status >= 400:
            assert error_fields <= set(await response.json())


def test_request_schemas_come_from_the_models() -> None:
    schemas = openapi.components()
    assert set(schemas["DecisionIn"]["properties"]) == set(DecisionIn.__struct_fields__)
    assert set(schemas["SessionIn"]["properties"]) == set(SessionIn.__struct_fields__)
    # Unknown fields are accepted (and reported), so the document must not forbid them.
    assert "additionalProperties" not in schemas["DecisionIn"]


async def test_docs_page_needs_no_network(client: TestClient) -> None:
    response = await client.get("/docs")
    assert response.status == 200 and response.content_type == "text/html"
    page = await response.text()
    assert "/openapi.json" in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "external resource in /docs"
    assert not re.search(r"""fetch\(["']https?:""", page)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="no chromium on this machine")
async def test_docs_page_renders_every_operation_in_a_real_browser(client: TestClient) -> None:
    document: dict[str, Any] = await (await client.get("/openapi.json")).json()
    operations = sum(len(item) for item in document["paths"].values())
    chromium = await asyncio.create_subprocess_exec(
        "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--virtual-time-budget=5000",
        "--dump-dom",
        str(client.make_url("/docs")),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    dom, _ = await asyncio.wait_for(chromium.communicate(), 45)
    html = dom.decode()
    assert html.count('class="op"') == operations
    assert html.count('class="schema"') == len(document["components"]["schemas"])
    assert 'id="schema-DecisionIn"' in html and 'class="muted">Could not load' not in html
