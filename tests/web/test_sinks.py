"""Sinks end to end on a real app and store: delivery, retries, dead letters, tenants, bad input."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from cavra_ingest.core.errors import ApiError
from cavra_ingest.core.sinks import SinkDef
from cavra_ingest.http.app import create_app
from cavra_ingest.http.keys import CHILD_KEY, DELIVERY_KEY, SETTINGS_KEY, SINK_TABLES_KEY
from cavra_ingest.http.sinkfilter import compiler
from cavra_ingest.settings import Settings
from cavra_ingest.store.tokens import new_token, token_store
from tests.conftest import MakeClient, decision
from tests.sinkreceivers import decode_hec, decode_otlp, decode_webhook, http_receiver, until

FAST = {
    "sink_delivery": "inline",
    "sink_batch_ms": 20,
    "sink_backoff_s": 0.02,
    "sink_backoff_max_s": 0.2,
    "sink_lease_s": 3.0,
}


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


async def settled(
    client: TestClient, name: str, delivered: int, timeout_s: float = 20.0, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """The sink's status once its cursor counts `delivered` (the receiver answers before the cursor moves)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while (shown := await status(client, name, headers))["delivered"] < delivered:
        assert asyncio.get_running_loop().time() < deadline, shown
        await asyncio.sleep(0.02)
    return shown


async def status(client: TestClient, name: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    response = await client.get(f"/sinks/{name}", headers=headers)
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
        shown = await settled(client, "siem", 40)
        assert shown["delivered"] == 40 and shown["dead_letters"] == 0 and shown["state"] == "active"


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_filter_is_the_decisions_query(make_client: MakeClient, kind: str) -> None:
    client = await sink_client(make_client, kind)
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


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_otlp_logs(make_client: MakeClient, kind: str) -> None:
    client = await sink_client(make_client, kind)
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
        shown = await settled(client, "flaky", 30)
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


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_pause_resume_and_start_now(make_client: MakeClient, kind: str) -> None:
    client = await sink_client(make_client, kind)
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


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_bad_input_is_a_clear_4xx_and_changes_nothing(make_client: MakeClient, kind: str) -> None:
    client = await sink_client(make_client, kind)
    await add_sink(client, name="one", kind="webhook", target="http://127.0.0.1:9/hook")
    before = await (await client.get("/sinks")).json()
    cases = [
        ({"name": "x", "kind": "carrier-pigeon", "target": "http://h/"}, 400, "kind"),
        ({"name": "x", "kind": "webhook", "target": "ftp://h/"}, 400, "target"),
        ({"name": "x", "kind": "webhook", "target": "not a url"}, 400, "target"),
        ({"name": "x", "kind": "webhook", "target": "https://user:hunter2@h/hook"}, 400, "target"),
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
        assert "hunter2" not in await response.text()  # a credential in a refused target is never echoed
    response = await client.patch("/sinks/one", json={"filter": "severity=awful"})
    assert response.status == 400
    response = await client.post("/sinks", data=b"{not json")
    assert response.status == 400
    assert await (await client.get("/sinks")).json() == before


FILTERS = st.lists(
    st.sampled_from(["decision=block", "decision=allow", "tenant_id=ten-a", "tenant_id=ten-b", "severity=high",
                     "q=aws", "repository=acme/*", "agent_id=agent-a", "tenant_id=", "workspace_id=w1"]),
    max_size=3,
).map("&".join)  # fmt: skip
RECORDS = st.lists(
    st.fixed_dictionaries({
        "tenant_id": st.sampled_from(["ten-a", "ten-b", None]),
        "decision": st.sampled_from(["allow", "block"]),
        "target": st.sampled_from(["~/.aws/credentials", "src/app.py"]),
        "workspace_id": st.sampled_from(["w1", None]),
    }),
    max_size=20,
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(text=FILTERS, records=RECORDS)
def test_a_tenant_sink_never_matches_another_tenants_record(text: str, records: list[dict[str, Any]]) -> None:
    app = create_app(Settings.of(activity_db=":memory:"))
    sink = SinkDef("t", "webhook", "http://h/", "2026-01-01T00:00:00+00:00", text, tenant_id="ten-a")
    try:
        test = compiler(app)(sink)
    except ApiError as exc:
        # The route refuses such a filter (another tenant named, `q` twice): it is never stored.
        assert (exc.status == 403 and "ten-b" in text) or (exc.status == 400 and text.count("q=") > 1)
        return
    for fields in records:
        record = {**decision(**{k: v for k, v in fields.items() if v is not None}), "severity": "high"}
        if fields["tenant_id"] is None:
            record.pop("tenant_id", None)
        if test(record):
            assert record.get("tenant_id") == "ten-a", (text, record)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_tenant_admin_manages_and_receives_only_its_tenant(make_client: MakeClient, kind: str) -> None:
    client = await sink_client(make_client, kind)
    tokens = token_store(client.app[SETTINGS_KEY])
    assert tokens is not None
    await tokens.open()
    try:
        made = {}
        for label, scopes, tenant in (("root", ["admin"], None), ("a", ["admin"], "ten-a"), ("b", ["admin"], "ten-b")):
            token, secret = new_token(scopes, tenant_id=tenant)
            await tokens.create(token, secret)
            made[label] = {"Authorization": f"Bearer {secret}"}
    finally:
        await tokens.close()
    async with http_receiver(decode_webhook, "/hook") as receiver:
        response = await client.post("/sinks", json={"name": "a", "kind": "webhook", "target": receiver.url,
                                                     "filter": "tenant_id="}, headers=made["a"])  # fmt: skip
        assert response.status == 201, await response.text()
        receiver.secret = (await response.json())["secret"]
        assert (await response.json())["tenant_id"] == "ten-a"
        refused = await client.post("/sinks", json={"name": "a2", "kind": "webhook", "target": receiver.url,
                                                    "filter": "tenant_id=ten-b"}, headers=made["a"])  # fmt: skip
        assert refused.status == 403
        other = await client.post("/sinks", json={"name": "a3", "kind": "webhook", "target": receiver.url,
                                                  "tenant_id": "ten-b"}, headers=made["a"])  # fmt: skip
        assert other.status == 403
        assert (await client.get("/sinks/a", headers=made["b"])).status == 404
        assert (await client.delete("/sinks/a", headers=made["b"])).status == 404
        assert (await (await client.get("/sinks", headers=made["b"])).json())["items"] == []
        assert [s["name"] for s in (await (await client.get("/sinks", headers=made["root"])).json())["items"]] == ["a"]
        tenants = [random.choice(["ten-a", "ten-b"]) for _ in range(60)]
        mixed = [decision(tenant_id=t, session_id=f"s-{t}") for t in tenants] + [decision(session_id="s-none")]
        response = await client.post("/decisions", json=mixed, headers=made["root"])
        assert response.status == 200
        mine = {r["decision_id"] for r in mixed if r.get("tenant_id") == "ten-a"}
        await until(lambda: receiver.ids() >= mine, what="tenant a's records")
        # Once the cursor counts them all and nothing is left to read, the others were seen and skipped.
        shown = await settled(client, "a", len(mine), headers=made["root"])
        deadline = asyncio.get_running_loop().time() + 20
        while shown["lag_records"]:
            assert asyncio.get_running_loop().time() < deadline, shown
            await asyncio.sleep(0.02)
            shown = await status(client, "a", made["root"])
        assert receiver.ids() == mine and all(r["tenant_id"] == "ten-a" for r in receiver.records)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_metrics_and_healthz_show_a_lagging_sink(make_client: MakeClient, kind: str) -> None:
    client = await sink_client(make_client, kind, sink_lag_alert_s=0.2)
    async with http_receiver(decode_webhook, "/hook") as receiver:
        sink = await add_sink(client, name="up", kind="webhook", target=receiver.url)
        receiver.secret = sink["secret"]
        # Nothing listens on port 9: every attempt fails, the sink lags.
        await add_sink(client, name="down", kind="webhook", target="http://127.0.0.1:9/hook")
        records = [decision() for _ in range(5)]
        await post(client, records)
        await until(lambda: len(receiver.ids()) == 5, what="the healthy sink's delivery")
        await settled(client, "up", 5)

        async def health() -> dict[str, Any]:
            reply: dict[str, Any] = await (await client.get("/healthz")).json()
            return reply

        deadline = asyncio.get_running_loop().time() + 10
        while not (await health())["sinks"]["lagging"]:
            assert asyncio.get_running_loop().time() < deadline, await health()
            await asyncio.sleep(0.05)
        sinks = (await health())["sinks"]
        assert sinks["total"] == 2 and [s["name"] for s in sinks["lagging"]] == ["down"]
        assert sinks["lagging"][0]["lag_records"] == 5
        text = await (await client.get("/metrics")).text()
        assert 'cavra_sink_delivered_total{sink="up"} 5.0' in text
        assert 'cavra_sink_lag_records{sink="down"} 5.0' in text
        failed = [line for line in text.splitlines() if line.startswith('cavra_sink_failed_total{sink="down"}')]
        assert failed and float(failed[0].split()[-1]) >= 1
        assert 'cavra_sink_last_success_timestamp_seconds{sink="up"}' in text
        shown = await status(client, "down")
        assert shown["last_error"] and shown["lag_records"] == 5 and shown["delivered"] == 0


async def test_the_delivery_child_delivers_and_ends_with_its_app(make_client: MakeClient) -> None:
    # The default: `serve` delivers from a child process, started once a sink is active.
    client = await make_client(sink_batch_ms=20, sink_lease_s=3.0)
    delivery = client.app[DELIVERY_KEY]
    assert not delivery.deliver
    async with http_receiver(decode_webhook, "/hook") as receiver:
        sink = await add_sink(client, name="child", kind="webhook", target=receiver.url)
        receiver.secret = sink["secret"]
        records = [decision() for _ in range(10)]
        await post(client, records)
        await until(lambda: receiver.ids() == {r["decision_id"] for r in records}, what="delivery by the child")
        await until(lambda: delivery.stats["child"].delivered == 10, what="the server's view of it")
        text = await (await client.get("/metrics")).text()
        assert 'cavra_sink_delivered_total{sink="child"} 10.0' in text
        child = client.app[CHILD_KEY]
        assert child.proc is not None and child.proc.returncode is None
        await client.close()
        assert child.proc.returncode is not None, "the child ended with its app"


def test_backoff_doubles_with_jitter_and_honours_retry_after_up_to_the_cap() -> None:
    from cavra_ingest.settings import SinkSettings
    from workers.delivery import Delivery

    delivery = Delivery(None, SinkSettings(sink_backoff_s=0.5, sink_backoff_max_s=30.0), lambda sink: None)  # type: ignore[arg-type]
    for attempt, full in ((1, 0.5), (2, 1.0), (3, 2.0), (8, 30.0), (20, 30.0)):
        delays = [delivery.backoff(attempt, None) for _ in range(200)]
        assert all(full / 2 <= d <= full for d in delays) and len(set(delays)) > 1, (attempt, full)
    assert delivery.backoff(1, 7.0) >= 7.0  # Retry-After: at least that long
    assert delivery.backoff(1, 500.0) == 30.0  # but never past the cap


async def test_the_cursor_never_moves_back(make_client: MakeClient) -> None:
    client = await sink_client(make_client, sink_delivery="off")
    await add_sink(client, name="c", kind="webhook", target="http://127.0.0.1:9/")
    tables = client.app[SINK_TABLES_KEY]
    await tables.advance("c", (0, 10), 5, caught_up=False)
    await tables.advance("c", (0, 4), 3, caught_up=False)  # a stale holder's late write
    cursor = await tables.cursor("c")
    assert cursor is not None and cursor[0] == (0, 10) and cursor[1] == 5


async def test_postgres_a_transaction_committing_late_is_not_skipped(make_client: MakeClient) -> None:
    """Writers commit in any order: a row numbered before rows already delivered still reaches the sink."""
    import asyncpg

    from cavra_ingest.core.sqltext import numbered
    from cavra_ingest.store.sql import INSERT_DECISION
    from tests.conftest import POSTGRES_URL

    client = await sink_client(make_client, "postgres")
    schema = client.app[SETTINGS_KEY].store.postgres_schema
    async with http_receiver(decode_webhook, "/hook") as receiver:
        sink = await add_sink(client, name="order", kind="webhook", target=receiver.url)
        receiver.secret = sink["secret"]
        late = decision(decision_id="dec-late", session_id="s-late")
        conn = await asyncpg.connect(POSTGRES_URL, server_settings={"search_path": schema})
        try:
            transaction = conn.transaction()
            await transaction.start()
            # Takes its xid and sequence number now, commits only after the others are delivered.
            row = ("dec-late", "s-late", "agent-a", "agent-a", "acme/api", "default", "read_file", "x", "r", "allow",
                   "low", late["timestamp"], None, msgspec.json.encode(late).decode(), None, None)  # fmt: skip
            await conn.execute(numbered(INSERT_DECISION), *row)
            early = [decision(session_id="s-early") for _ in range(5)]
            await post(client, early)
            await asyncio.sleep(0.3)  # the sink looks several times (20 ms) and must not pass the open row
            assert not receiver.ids() & {r["decision_id"] for r in early}, "read past a running transaction"
            await transaction.commit()
        finally:
            await conn.close()
        await until(lambda: receiver.ids() >= {"dec-late"} | {r["decision_id"] for r in early}, what="all six")


async def test_splunk_hec_with_indexer_acknowledgement(make_client: MakeClient) -> None:
    """`?ack=1`: a batch counts only once /services/collector/ack confirms its ackId (polled)."""
    from aiohttp import web

    events: list[dict[str, Any]] = []
    pending: dict[int, int] = {}  # ackId -> polls before it is confirmed
    channels: set[str] = set()

    async def event(request: web.Request) -> web.Response:
        assert request.headers["Authorization"] == "Splunk tok"
        channels.add(request.headers["X-Splunk-Request-Channel"])
        events.extend(decode_hec_body(await request.read()))
        ack_id = len(pending)
        pending[ack_id] = 2  # confirmed at the third poll
        return web.json_response({"text": "Success", "code": 0, "ackId": ack_id})

    async def ack(request: web.Request) -> web.Response:
        assert request.query["channel"] in channels
        asked = (await request.json())["acks"]
        answer = {}
        for ack_id in asked:
            pending[ack_id] -= 1
            answer[str(ack_id)] = pending[ack_id] < 0
        return web.json_response({"acks": answer})

    app = web.Application()
    app.router.add_post("/services/collector/event", event)
    app.router.add_post("/services/collector/ack", ack)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        client = await sink_client(make_client)
        await add_sink(client, name="hec", kind="splunk_hec", target=f"http://127.0.0.1:{port}?ack=1", secret="tok")
        records = [decision() for _ in range(12)]
        await post(client, records)
        shown = await settled(client, "hec", 12)
        assert {e["decision_id"] for e in events} == {r["decision_id"] for r in records}
        assert all(n < 0 for n in pending.values()) and shown["dead_letters"] == 0 and len(channels) == 1
    finally:
        await client.close()
        await asyncio.wait_for(runner.cleanup(), 10)


def decode_hec_body(body: bytes) -> list[dict[str, Any]]:
    return [msgspec.json.decode(line)["event"] for line in body.splitlines() if line.strip()]


async def test_a_kind_whose_package_is_missing_is_refused(make_client: MakeClient, monkeypatch: Any) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pyarrow" else real(name, *a))
    client = await sink_client(make_client)
    response = await client.post("/sinks", json={"name": "arch", "kind": "parquet", "target": "/tmp/x"})
    error = await response.json()
    assert response.status == 400 and error["field"] == "kind" and "pyarrow" in error["detail"]
    assert (await (await client.get("/sinks")).json())["items"] == []
