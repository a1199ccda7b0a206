"""Property: whatever the records of three tenants and the filters, no read route returns or counts another's."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

import msgspec
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import MakeClient
from tests.web.test_auth import bearer, secret

TENANTS = ["ten-a", "ten-b", "ten-c"]
_ids = itertools.count()


@st.composite
def record(draw: st.DrawFn) -> dict[str, Any]:
    tenant = draw(st.sampled_from(TENANTS))
    return {
        "decision_id": f"p-{next(_ids)}",
        # Sessions are per tenant: a session never spans tenants (that write would be refused).
        "session_id": f"{tenant}-s{draw(st.integers(0, 2))}",
        "tenant_id": tenant,
        "workspace_id": draw(st.sampled_from(["ws-1", "ws-2"])),
        "decision": draw(st.sampled_from(["allow", "block", "warn"])),
        "agent_id": draw(st.sampled_from(["agent-a", "agent-b"])),
        "repository": draw(st.sampled_from(["acme/api", "acme/web"])),
        "timestamp": f"2026-03-01T10:00:{draw(st.integers(0, 59)):02d}+00:00",
    }


FILTERS = st.fixed_dictionaries(
    {},
    optional={
        "decision": st.sampled_from(["allow", "block", "warn"]),
        "agent_id": st.sampled_from(["agent-a", "agent-b"]),
        "repository": st.sampled_from(["acme/api", "acme/web"]),
        "workspace_id": st.sampled_from(["ws-1", "ws-2"]),
        "since": st.sampled_from(["2026-03-01T10:00:30Z", "2026-03-01T10:00:50Z"]),
    },
)


# A GET as some caller: (status, body). The token test and the cookie-session test (test_signin_tenants.py) run the
# same check with their own callers.
Fetch = Callable[[str], Awaitable[tuple[int, bytes]]]


async def get_json(fetch: Fetch, url: str) -> Any:
    status, body = await fetch(url)
    assert status == 200, body[:500]
    return msgspec.json.decode(body)


async def isolation_holds(reader: Fetch, admin: Fetch, records: list[dict[str, Any]], filters: dict[str, str],
                          tenant: str) -> None:  # fmt: skip
    """What `reader` (bound to `tenant`) gets from every read route is exactly the admin's answer for `tenant`."""
    query = urlencode(filters)
    # What the tenant may see: the administrator's answer to the same filters restricted to the tenant.
    truth = await get_json(admin, f"/decisions?limit=500&{query}&tenant_id={tenant}")
    want = [item["decision_id"] for item in truth["items"]]
    page = await get_json(reader, f"/decisions?limit=500&{query}")
    assert [item["decision_id"] for item in page["items"]] == want and page["total"] == truth["total"]
    assert {item["tenant_id"] for item in page["items"]} <= {tenant}
    facets = await get_json(reader, f"/decisions/facets?{query}")
    assert facets["total"] == truth["total"]
    assert sum(count["count"] for count in facets["facets"]["decision"]) == truth["total"]
    status, export = await reader(f"/decisions.ndjson?{query}")
    lines = [msgspec.json.decode(line) for line in export.splitlines()]
    assert status == 200 and [line["decision_id"] for line in lines] == want
    status, csv = await reader(f"/decisions.csv?{query}")
    assert status == 200 and len(csv.decode().splitlines()) - 1 == truth["total"]
    histogram = await get_json(reader, f"/decisions/histogram?{query}")
    assert sum(sum(bucket["counts"].values()) for bucket in histogram["buckets"]) == truth["total"]
    session_query = urlencode({k: v for k, v in filters.items() if k in {"agent_id", "repository"}})
    sessions = await get_json(reader, f"/sessions?limit=500&{session_query}")
    assert all(item["tenant_id"] == tenant for item in sessions["items"])
    status, exported = await reader(f"/sessions.ndjson?{session_query}")
    summaries = [msgspec.json.decode(line) for line in exported.splitlines()]
    assert status == 200
    assert [item["session_id"] for item in summaries] == [item["session_id"] for item in sessions["items"]]
    for other in records:
        visible = other["tenant_id"] == tenant
        status, _ = await reader(f"/decisions/{other['decision_id']}")
        assert status == (200 if visible else 404)
        status, body = await reader(f"/sessions/{other['session_id']}/decisions")
        assert status == (200 if visible else 404)
        if visible:
            items = msgspec.json.decode(body)["items"]
            assert {item["tenant_id"] for item in items} == {tenant}
        status, _ = await reader(f"/sessions/{other['session_id']}")
        assert status == (200 if visible else 404)
        status, _ = await reader(f"/sessions/{other['session_id']}/evidence")
        assert status == (200 if visible else 404)
        # Visible: a proof, or 503 until the next checkpoint signs it; another tenant's looks absent.
        status, _ = await reader(f"/decisions/{other['decision_id']}/proof")
        assert status in ((200, 503) if visible else (404,))


def bearer_fetch(client: TestClient, token: str) -> Fetch:
    async def fetch(url: str) -> tuple[int, bytes]:
        response = await client.get(url, headers=bearer(token))
        return response.status, await response.read()

    return fetch


@pytest.mark.slow
async def test_no_read_route_leaks_another_tenants_records(make_client: MakeClient) -> None:
    client = await make_client("sqlite", auth_cache_s=60.0)
    admin = await secret(client, ["admin"])
    readers = {tenant: await secret(client, ["read"], tenant) for tenant in TENANTS}

    for records, filters, tenant in examples(40):
        if records:
            response = await client.post("/decisions", json=records, headers=bearer(admin))
            assert response.status == 200, await response.text()
        await isolation_holds(bearer_fetch(client, readers[tenant]), bearer_fetch(client, admin), records, filters,
                              tenant)  # fmt: skip


def examples(count: int) -> list[tuple[list[dict[str, Any]], dict[str, str], str]]:
    """Draw the cases with hypothesis up front: it cannot drive a coroutine on the test's own loop and app."""
    drawn: list[tuple[list[dict[str, Any]], dict[str, str], str]] = []

    @settings(max_examples=count, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(records=st.lists(record(), max_size=8), filters=FILTERS, tenant=st.sampled_from(TENANTS))
    def collect(records: list[dict[str, Any]], filters: dict[str, str], tenant: str) -> None:
        drawn.append((records, filters, tenant))

    collect()
    return drawn
