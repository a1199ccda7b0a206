"""GET /metrics: Prometheus text from the app's own registry, counted in middleware and around the writer."""

from __future__ import annotations

from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import MakeClient, decision


async def scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def test_records_requests_batches_and_queue_are_counted(make_client: MakeClient) -> None:
    client = await make_client(queue_max_records=777)
    first = decision()
    assert (await client.post("/decisions", json=[first, decision(), decision(decision="nope")])).status == 207
    assert (await client.post("/decisions", json=first)).status == 200  # duplicate
    assert (await client.post("/decisions", json={**first, "target": "other"})).status == 409
    assert (await client.get("/decisions/no-such-id")).status == 404
    assert (await client.get("/no/such/path")).status == 404
    samples = await scrape(client)
    records = {labels[0][1]: value for (name, labels), value in samples.items() if name == "cavra_records_total"}
    assert records == {"received": 5, "created": 2, "rejected": 1, "duplicate": 1, "conflict": 1}
    post = (("method", "POST"), ("route", "/decisions"))
    assert samples[("cavra_http_requests_total", (*post[:1], post[1], ("status", "207")))] == 1
    assert samples[("cavra_http_requests_total", (("method", "GET"), ("route", "/decisions/{decision_id}"),
                                                  ("status", "404")))] == 1  # fmt: skip
    # A path nobody routes never becomes a label value.
    routes = {dict(labels).get("route") for (name, labels) in samples if name == "cavra_http_requests_total"}
    assert "/no/such/path" not in routes and "unmatched" in routes
    assert samples[("cavra_http_request_duration_seconds_count", post)] == 3
    # Three commits (the 409 is planned inside a transaction too) of 2, 1 and 1 records.
    assert samples[("cavra_writer_batch_records_count", ())] == 3
    assert samples[("cavra_writer_batch_records_sum", ())] == 4
    assert samples[("cavra_writer_commit_duration_seconds_count", ())] == 3
    assert samples[("cavra_queue_capacity_records", ())] == 777
    assert samples[("cavra_queue_records", ())] == 0
    assert samples[("cavra_store_errors_total", ())] == 0
    assert samples[("cavra_http_shed_requests_total", (("status", "503"),))] == 0
    build = [labels for (name, labels) in samples if name == "cavra_build_info"]
    assert build and dict(build[0])["store"] == "sqlite" and dict(build[0])["version"]


async def test_shed_requests_are_counted(make_client: MakeClient) -> None:
    client = await make_client(queue_max_records=2)
    response = await client.post("/decisions", json=[decision() for _ in range(3)])
    assert response.status == 503
    samples = await scrape(client)
    assert samples[("cavra_http_shed_requests_total", (("status", "503"),))] == 1


async def test_each_app_has_its_own_registry(make_client: MakeClient) -> None:
    one, two = await make_client(), await make_client()
    assert (await one.post("/decisions", json=decision())).status == 200
    assert (await scrape(one))[("cavra_records_total", (("outcome", "created"), ("tenant", "")))] == 1
    assert ("cavra_records_total", (("outcome", "created"), ("tenant", ""))) not in await scrape(two)
