"""Opt-in CORS for the read routes (`CAVRA_CORS_ORIGINS`): preflights, headers, refusals, off by default."""

from __future__ import annotations

import pytest

from cavra_ingest.http.cors import parse_origins
from tests.conftest import decision

CONSOLE = "http://127.0.0.1:9999"
PREFLIGHT = {"Origin": CONSOLE, "Access-Control-Request-Method": "GET"}


async def test_preflight_for_a_read_with_authorization_is_answered(make_client):
    client = await make_client(cors_origins=f"{CONSOLE}, https://console.example")
    response = await client.options(
        "/decisions", headers={**PREFLIGHT, "Access-Control-Request-Headers": "authorization"}
    )
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == CONSOLE
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    assert "authorization" in response.headers["Access-Control-Allow-Headers"].split(", ")
    assert response.headers["Access-Control-Allow-Methods"] == "GET, HEAD"
    read = await client.get("/decisions", headers={"Origin": CONSOLE})
    assert read.headers["Access-Control-Allow-Origin"] == CONSOLE and "Origin" in read.headers["Vary"]
    # Streams get the header too (set before their first byte).
    export = await client.get("/decisions.ndjson", headers={"Origin": CONSOLE})
    assert export.headers["Access-Control-Allow-Origin"] == CONSOLE
    # Errors are readable cross-origin as well: the console shows their detail.
    bad = await client.get("/decisions", params={"limit": "x"}, headers={"Origin": CONSOLE})
    assert bad.status == 400 and bad.headers["Access-Control-Allow-Origin"] == CONSOLE


async def test_other_origins_methods_and_headers_are_refused(make_client):
    client = await make_client(cors_origins=CONSOLE)
    other = await client.options("/decisions", headers={**PREFLIGHT, "Origin": "http://127.0.0.1:1"})
    assert other.status == 403 and "Access-Control-Allow-Origin" not in other.headers
    write = await client.options("/decisions", headers={**PREFLIGHT, "Access-Control-Request-Method": "POST"})
    assert write.status == 403 and "only reads" in (await write.json())["detail"]
    header = await client.options("/decisions", headers={**PREFLIGHT, "Access-Control-Request-Headers": "x-evil"})
    assert header.status == 403 and "x-evil" in (await header.json())["detail"]
    posted = await client.post("/decisions", json=decision(), headers={"Origin": CONSOLE})
    assert posted.status == 200 and "Access-Control-Allow-Origin" not in posted.headers
    stranger = await client.get("/decisions", headers={"Origin": "http://127.0.0.1:1"})
    assert "Access-Control-Allow-Origin" not in stranger.headers


async def test_cors_is_off_by_default(make_client):
    client = await make_client()
    response = await client.options("/decisions", headers=PREFLIGHT)
    assert response.status == 405
    read = await client.get("/decisions", headers={"Origin": CONSOLE})
    assert "Access-Control-Allow-Origin" not in read.headers
    config = await (await client.get("/console/config")).json()
    assert config["cors_origins"] == []


@pytest.mark.parametrize("bad", ["*", "http://*.example", "https://console.example/path", "console.example", "ftp://x"])
def test_only_exact_origins_are_accepted(bad):
    with pytest.raises(ValueError, match="exact origins"):
        parse_origins(bad)


def test_origins_are_read_exactly():
    assert parse_origins(" https://a.example:8443 ,http://127.0.0.1:81,") == {
        "https://a.example:8443",
        "http://127.0.0.1:81",
    }


async def test_console_config_serves_what_cavras_console_reads(make_client):
    client = await make_client(cors_origins=CONSOLE)
    config = await (await client.get("/console/config")).json()
    assert config["activity_mode"] == "sqlite"
    assert config["metadata_mode"] == "api"
    assert config["api_base_url"] == f"http://{client.server.host}:{client.server.port}"
    assert config["cors_origins"] == [CONSOLE]
    pinned = await make_client(api_base_url="https://cavra.example/api")
    assert (await (await pinned.get("/console/config")).json())["api_base_url"] == "https://cavra.example/api"
