"""Property: whatever the records of three tenants and the filters, no read route returns or counts another's."""

from __future__ import annotations

import itertools
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


async def get_json(client: TestClient, url: str, token: str) -> Any:
    response = await client.get(url, headers=bearer(token))
    assert response.status == 200, await response.text()
    return await response.json()


@pytest.mark.slow
async def test_no_read_route_leaks_another_tenants_records(make_client: MakeClient) -> None:
    client = await make_client("sqlite", auth_cache_s=60.0)
    admin = await secret(client, ["admin"])
    readers = {tenant: await secret(client, ["read"], tenant) for tenant in TENANTS}

    async def check(records: list[dict[str, Any]], filters: dict[str, str], tenant: str) -> None:
        if records:
            response = await client.post("/decisions", json=records, headers=bearer(admin))
            assert response.status == 200, await response.text()
        token = readers[tenant]
        query = urlencode(filters)
        # What the tenant may see: the administrator's answer to the same filters restricted to the tenant.
        truth = await get_json(client, f"/decisions?limit=500&{query}&tenant_id={tenant}", admin)
        want = [item["decision_id"] for item in truth["items"]]
        page = await get_json(client, f"/decisions?limit=500&{query}", token)
        assert [item["decision_id"] for item in page["items"]] == want and page["total"] == truth["total"]
        assert {item["tenant_id"] for item in page["items"]} <= {tenant}
        facets = await get_json(client, f"/decisions/facets?{query}", token)
        assert facets["total"] == truth["total"]
        assert sum(count["count"] for count in facets["facets"]["decision"]) == truth["total"]
        export = await client.get(f"/decisions.ndjson?{query}", headers=bearer(token))
        lines = [msgspec.json.decode(line) for line in (await export.read()).splitlines()]
        assert [line["decision_id"] for line in lines] == want
        csv = (await (await client.get(f"/decisions.csv?{query}", headers=bearer(token))).text()).splitlines()
        assert len(csv) - 1 == truth["total"]
        histogram = await get_json(client, f"/decisions/histogram?{query}", token)
        assert sum(sum(bucket["counts"].values()) for bucket in histogram["buckets"]) == truth["total"]
        session_query = urlencode({k: v for k, v in filters.items() if k in {"agent_id", "repository"}})
        sessions = await get_json(client, f"/sessions?limit=500&{session_query}", token)
        assert all(item["tenant_id"] == tenant for item in sessions["items"])
        exported = await client.get(f"/sessions.ndjson?{session_query}", headers=bearer(token))
        summaries = [msgspec.json.decode(line) for line in (await exported.read()).splitlines()]
        assert [item["session_id"] for item in summaries] == [item["session_id"] for item in sessions["items"]]
        for other in records:
            visible = other["tenant_id"] == tenant
            single = await client.get(f"/decisions/{other['decision_id']}", headers=bearer(token))
            assert single.status == (200 if visible else 404)
            timeline = await client.get(f"/sessions/{other['session_id']}/decisions", headers=bearer(token))
            assert timeline.status == (200 if visible else 404)
            if visible:
                items = (await timeline.json())["items"]
                assert {item["tenant_id"] for item in items} == {tenant}

    for example in examples(40):
        await check(*example)


def examples(count: int) -> list[tuple[list[dict[str, Any]], dict[str, str], str]]:
    """Draw the cases with hypothesis up front: it cannot drive a coroutine on the test's own loop and app."""
    drawn: list[tuple[list[dict[str, Any]], dict[str, str], str]] = []

    @settings(max_examples=count, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(records=st.lists(record(), max_size=8), filters=FILTERS, tenant=st.sampled_from(TENANTS))
    def collect(records: list[dict[str, Any]], filters: dict[str, str], tenant: str) -> None:
        drawn.append((records, filters, tenant))

    collect()
    return drawn
