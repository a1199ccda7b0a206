"""Sinks end to end on a real app and store: delivery, retries, dead letters, tenants, bad input."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from cavra_ingest.http.keys import DELIVERY_KEY
from tests.conftest import MakeClient, decision
from tests.sinkreceivers import decode_hec, decode_otlp, decode_webhook, http_receiver, until

FAST = {"sink_batch_ms": 20, "sink_backoff_s": 0.02, "sink_backoff_max_s": 0.2, "sink_lease_s": 3.0}


async def sink_client(make_client: MakeClient, kind: str = "sqlite", **overrides: Any) -> TestClient:
    return await make_client(kind, **{**FAST, **overrides})


async def add_sink(client: TestClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/sinks", json=body)
    assert response.status == 201, await response.text()
    reply: dict[str, Any] = await response.json()
    return reply


async def post(client: TestClient, records: list[dict[str, Any]]) -> None:
    response = await client.post("/decisions", json=records)
    assert response.status == 200, await response.text()


async def status(client: TestClient, name: str) -> dict[str, Any]:
    response = await client.get(f"/sinks/{name}")
    assert response.status == 200
    reply: dict[str, Any] = await response.json()
    return reply


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_webhook_gets_every_decision_signed(make_client: MakeClient, kind: str) -> None:
    client = await sink_client(make_client, kind)
    async with http_receiver(decode_webhook, "/hook") as receiver:
        sink = await add_sink(client, name="siem", kind="webhook", target=receiver.url)
        receiver.secret = sink["secret"]
        assert sink["secret"].startswith("whsec_")
        shown = await status(client, "siem")
        assert "secret" not in shown and sink["secret"] not in str(await (await client.get("/sinks")).text())
        records = [decision() for _ in range(40)]
        await post(client, records[:25])
        await post(client, records[25:])
        await until(lambda: receiver.ids() >= {r["decision_id"] for r in records}, what="all 40 delivered")
        assert not receiver.problems
        shown = await status(client, "siem")
        assert shown["delivered"] == 40 and shown["dead_letters"] == 0 and shown["state"] == "active"


async def test_filter_is_the_decisions_query(make_client: MakeClient) -> None:
    client = await sink_client(make_client)
    async with http_receiver(decode_hec, "/services/collector/event", secret="hec-token") as receiver:
        base = receiver.url.removesuffix("/services/collector/event")
        await add_sink(client, name="alerts", kind="splunk_hec", target=base, secret="hec-token",
                       filter="decision=block&q=.aws")  # fmt: skip
        records = [decision(decision="block", target="~/.aws/credentials"), decision(decision="block"),
                   decision(target="~/.aws/config"), decision(decision="block", target="/x/.AWS/y")]  # fmt: skip
        await post(client, records)
        await until(lambda: len(receiver.ids()) == 2, what="two alerts")
        await post(client, [decision(decision="block", target=".aws-late")])
        await until(lambda: len(receiver.ids()) == 3, what="the late alert")
        assert receiver.ids() == {records[0]["decision_id"], records[3]["decision_id"]} | {
            receiver.records[-1]["decision_id"]
        }
        assert not receiver.problems


async def test_otlp_logs(make_client: MakeClient) -> None:
    client = await sink_client(make_client)
    async with http_receiver(decode_otlp, "/v1/logs") as receiver:
        await add_sink(client, name="otel", kind="otlp", target=receiver.url.removesuffix("/v1/logs"))
        records = [decision(severity="critical", decision="block") for _ in range(5)]
        await post(client, records)
        await until(lambda: receiver.ids() == {r["decision_id"] for r in records}, what="5 log records")
        assert not receiver.problems


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_receiver_failing_then_healthy_gets_everything(make_client: MakeClient, kind: str) -> None:
    client = await sink_client(make_client, kind)
    async with http_receiver(decode_webhook, "/hook") as receiver:
        receiver.behaviour = lambda n, records: 500 if n <= 6 else (429 if n == 7 else 200)
        sink = await add_sink(client, name="flaky", kind="webhook", target=receiver.url)
        receiver.secret = sink["secret"]
        records = [decision() for _ in range(30)]
        await post(client, records)
        await until(lambda: receiver.ids() >= {r["decision_id"] for r in records}, what="everything after 500s")
        shown = await status(client, "flaky")
        assert shown["failed"] >= 7 and shown["dead_letters"] == 0 and shown["delivered"] == 30


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_one_poisoned_record_is_dead_lettered_the_rest_flow(make_client: MakeClient, kind: str) -> None:
    client = await sink_client(make_client, kind)
    async with http_receiver(decode_webhook, "/hook") as receiver:
        poisoned = {"accept": False}

        def behaviour(n: int, records: list[dict[str, Any]]) -> int:
            bad = any(r["decision_id"] == "poison" for r in records)
            return 400 if bad and not poisoned["accept"] else 200

        receiver.behaviour = behaviour
        sink = await add_sink(client, name="strict", kind="webhook", target=receiver.url)
        receiver.secret = sink["secret"]
        records = [decision() for _ in range(10)] + [decision(decision_id="poison")] + [decision() for _ in range(9)]
        await post(client, records)
        good = {r["decision_id"] for r in records} - {"poison"}
        await until(lambda: receiver.ids() >= good, what="the 19 good records")
        dead = await (await client.get("/sinks/strict/dead")).json()
        assert [item["decision_id"] for item in dead["items"]] == ["poison"]
        assert dead["items"][0]["record"]["decision_id"] == "poison"
        assert "poison" not in receiver.ids()
        # The stream goes on after it.
        late = decision()
        await post(client, [late])
        await until(lambda: late["decision_id"] in receiver.ids(), what="a record after the poisoned one")
        poisoned["accept"] = True
        replayed = await (await client.post("/sinks/strict/replay")).json()
        assert replayed == {"replayed": 1, "dead_letters": 0}
        assert "poison" in receiver.ids()


async def test_pause_resume_and_start_now(make_client: MakeClient) -> None:
    client = await sink_client(make_client)
    async with http_receiver(decode_webhook, "/hook") as receiver:
        old = decision()
        await post(client, [old])
        sink = await add_sink(client, name="fresh", kind="webhook", target=receiver.url, start="now")
        receiver.secret = sink["secret"]
        response = await client.patch("/sinks/fresh", json={"state": "paused"})
        assert response.status == 200 and (await response.json())["state"] == "paused"
        delivery = client.app[DELIVERY_KEY]
        await until(lambda: "fresh" not in delivery.runs, what="the paused sink's loop to stop")
        new = decision()
        await post(client, [new])
        shown = await status(client, "fresh")
        assert shown["state"] == "paused" and shown["lag_records"] == 1 and shown["delivered"] == 0
        assert (await client.patch("/sinks/fresh", json={"state": "active"})).status == 200
        await until(lambda: new["decision_id"] in receiver.ids(), what="delivery after resume")
        assert old["decision_id"] not in receiver.ids()
        assert (await client.delete("/sinks/fresh")).status == 204
        assert (await client.get("/sinks/fresh")).status == 404


async def test_bad_input_is_a_clear_4xx_and_changes_nothing(make_client: MakeClient) -> None:
    client = await sink_client(make_client)
    await add_sink(client, name="one", kind="webhook", target="http://127.0.0.1:9/hook")
    before = await (await client.get("/sinks")).json()
    cases = [
        ({"name": "x", "kind": "carrier-pigeon", "target": "http://h/"}, 400, "kind"),
        ({"name": "x", "kind": "webhook", "target": "ftp://h/"}, 400, "target"),
        ({"name": "x", "kind": "webhook", "target": "not a url"}, 400, "target"),
        ({"name": "x", "kind": "syslog", "target": "tcp://host"}, 400, "target"),
        ({"name": "x", "kind": "webhook", "target": "http://h/", "filter": "decision=maybe"}, 400, "filter"),
        ({"name": "x", "kind": "webhook", "target": "http://h/", "filter": "colour=red"}, 400, "filter"),
        ({"name": "x", "kind": "webhook", "target": "http://h/", "filter": "limit=5"}, 400, "filter"),
        ({"name": "x", "kind": "webhook", "target": "http://h/", "secret": "whsec_!!"}, 400, "secret"),
        ({"name": "x", "kind": "splunk_hec", "target": "http://h/"}, 400, "secret"),
        ({"name": "x y", "kind": "webhook", "target": "http://h/"}, 400, "name"),
        ({"name": "x", "kind": "webhook", "target": "http://h/", "extra": 1}, 400, "extra"),
        ({"name": "one", "kind": "webhook", "target": "http://h/"}, 409, "name"),
    ]
    for body, expected, field in cases:
        response = await client.post("/sinks", json=body)
        error = await response.json()
        assert response.status == expected, (body, error)
        assert error["field"] == field and error["detail"], error
    response = await client.patch("/sinks/one", json={"filter": "severity=awful"})
    assert response.status == 400
    response = await client.post("/sinks", data=b"{not json")
    assert response.status == 400
    assert await (await client.get("/sinks")).json() == before
