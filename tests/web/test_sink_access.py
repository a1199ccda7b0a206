"""Access events (sign-ins, refusals, tokens) reach the sinks that opt in (`events`), each kind in its own shape,
a tenant sink only its tenant's; on SQLite and PostgreSQL, against the sink tests' real receivers."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cavra_ingest.http.keys import ACCESS_KEY, SETTINGS_KEY, SINK_TABLES_KEY
from cavra_ingest.settings import Settings
from cavra_ingest.store import make_store
from cavra_ingest.store.signin import AccessEvent
from cavra_ingest.store.sinks import SinkTables
from tests.conftest import MakeClient, decision
from tests.sinkreceivers import Receiver, http_receiver, until
from tests.web.test_sinks import FAST, add_sink, post, status

ACCESS_TYPES = {"cavra.decisions": "decision_id", "cavra.access": "id"}


def decode_webhook_both(receiver: Receiver, body: bytes, headers: dict[str, str]) -> list[dict[str, Any]]:
    """Standard Webhooks verified; a batch is of one stream, named by its `type`."""
    from standardwebhooks.webhooks import Webhook

    assert receiver.secret is not None
    payload = Webhook(receiver.secret).verify(body, headers)
    key = ACCESS_TYPES[payload["type"]]
    assert all(key in item for item in payload["data"]), payload
    if payload["type"] == "cavra.access":
        assert "_access_" in headers["webhook-id"] or "_dead_" in headers["webhook-id"]
    return [{**item, "_type": payload["type"]} for item in payload["data"]]


def decode_hec_both(receiver: Receiver, body: bytes, headers: dict[str, str]) -> list[dict[str, Any]]:
    assert headers.get("Authorization") == f"Splunk {receiver.secret}"
    found = []
    for line in body.splitlines():
        event = json.loads(line)
        record = event["event"]
        if event["sourcetype"] == "cavra:access":
            assert event["time"] == pytest.approx(datetime.fromisoformat(record["at"]).timestamp())
        else:
            assert event["sourcetype"] == "cavra:decision"
        found.append({**record, "_type": event["sourcetype"]})
    return found


def decode_otlp_both(receiver: Receiver, body: bytes, headers: dict[str, str]) -> list[dict[str, Any]]:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    request = ExportLogsServiceRequest()
    request.ParseFromString(body)
    found = []
    for resource in request.resource_logs:
        for scope in resource.scope_logs:
            for log in scope.log_records:
                attributes = {a.key: a.value.string_value for a in log.attributes}
                record = json.loads(log.body.string_value)
                if attributes["event.name"] == "cavra.access":
                    assert attributes["cavra.access.id"] == str(record["id"])
                    assert attributes["cavra.access.kind"] == record["kind"]
                    assert attributes.get("user.id") == record.get("sub")
                    assert attributes.get("client.address") == record.get("remote")
                    assert log.time_unix_nano == int(datetime.fromisoformat(record["at"]).timestamp() * 1e9)
                    assert log.severity_text == ("WARN" if record["kind"] == "refusal" else "INFO")
                else:
                    assert attributes["event.name"] == "cavra.decision"
                found.append({**record, "_type": attributes["event.name"]})
    return found


def access_of(receiver: Receiver) -> list[dict[str, Any]]:
    return [r for r in receiver.records if r["_type"] in ("cavra.access", "cavra:access")]


def decisions_of(receiver: Receiver) -> set[str]:
    return {r["decision_id"] for r in receiver.records if "decision_id" in r}


async def record_events(client: TestClient, events: list[AccessEvent]) -> None:
    """Store access events as the sign-in routes do (the app's own access store)."""
    for event in events:
        await client.app[ACCESS_KEY].record(event)


SIGN_INS = [
    AccessEvent("sign-in", "ok", sub="alice", email="alice@acme.test", remote="10.0.0.7", tenant_id="acme"),
    AccessEvent(
        "refusal", "no-role", sub="mallory", email="m@evil.test", remote="10.0.0.9", detail="no rule matches the claims"
    ),  # fmt: skip
    AccessEvent("sign-out", "ok", sub="bob", remote="10.0.0.8", tenant_id="globex"),
]


async def status_when(client: TestClient, name: str, condition: Any, timeout_s: float = 20.0) -> dict[str, Any]:
    """The sink's status once `condition` holds of it (the receiver answers before the cursor moves)."""
    import asyncio

    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition(shown := await status(client, name)):
        assert asyncio.get_running_loop().time() < deadline, shown
        await asyncio.sleep(0.02)
    return shown


async def sink_client(make_client: MakeClient, kind: str, **overrides: Any) -> TestClient:
    return await make_client(kind, **{**FAST, **overrides})


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_a_webhook_gets_access_events_beside_decisions_each_batch_typed(
    make_client: MakeClient, kind: str
) -> None:
    client = await sink_client(make_client, kind)
    async with http_receiver(decode_webhook_both, "/hook") as receiver:
        sink = await add_sink(client, name="siem", kind="webhook", target=receiver.url, events=["access", "decisions"])
        receiver.secret = sink["secret"]
        assert sink["events"] == ["decisions", "access"]
        decisions = [decision() for _ in range(5)]
        await post(client, decisions)
        await record_events(client, SIGN_INS)
        wanted = {d["decision_id"] for d in decisions}
        await until(lambda: len(access_of(receiver)) == 3 and decisions_of(receiver) >= wanted, what="3 and 5")
        assert not receiver.problems
        got = access_of(receiver)
        assert [(e["kind"], e["outcome"], e.get("sub"), e.get("tenant_id")) for e in got] == [
            (e.kind, e.outcome, e.sub, e.tenant_id) for e in SIGN_INS
        ]
        assert len({e["id"] for e in got}) == 3 and all(e["at"] and e["remote"] for e in got)
        shown = await status_when(client, "siem", lambda s: s["access_delivered"] == 3 and s["delivered"] == 5)
        assert shown["access_lag_records"] == 0 and shown["events"] == ["decisions", "access"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_an_access_only_sink_gets_no_decisions_and_a_tenant_sink_only_its_tenants_events(
    make_client: MakeClient, kind: str
) -> None:
    client = await sink_client(make_client, kind)
    async with (
        http_receiver(decode_hec_both, "/services/collector/event", secret="hec") as everyone,
        http_receiver(decode_hec_both, "/services/collector/event", secret="hec") as acme,
    ):
        await add_sink(client, name="all", kind="splunk_hec", target=everyone.url, secret="hec", events=["access"])
        await add_sink(client, name="acme", kind="splunk_hec", target=acme.url, secret="hec", events=["access"],
                       tenant_id="acme")  # fmt: skip
        await post(client, [decision(tenant_id="acme", session_id="s-acme") for _ in range(4)])
        await record_events(client, SIGN_INS * 2)
        await until(lambda: len(access_of(everyone)) == 6, what="every access event, the platform's included")
        # Once the tenant sink's access cursor has passed every event, the others' were never sent to it.
        shown = await status_when(client, "acme", lambda s: s["access_delivered"] and not s["access_lag_records"])
        assert [(e["kind"], e["tenant_id"]) for e in access_of(acme)] == [("sign-in", "acme")] * 2
        assert shown["access_delivered"] == 2 and shown["delivered"] == 0
        assert not decisions_of(everyone) and not decisions_of(acme)
        assert {e.get("tenant_id") for e in access_of(everyone)} == {"acme", "globex", None}
        assert not everyone.problems and not acme.problems


async def test_otlp_log_records_of_access_events(make_client: MakeClient) -> None:
    client = await sink_client(make_client, "sqlite")
    async with http_receiver(decode_otlp_both, "/v1/logs") as receiver:
        await add_sink(client, name="otel", kind="otlp", target=receiver.url.removesuffix("/v1/logs"),
                       events=["decisions", "access"])  # fmt: skip
        await record_events(client, SIGN_INS)
        await post(client, [decision()])
        await until(lambda: len(receiver.records) == 4, what="3 access log records and a decision")
        assert not receiver.problems
        assert [r["kind"] for r in access_of(receiver)] == ["sign-in", "refusal", "sign-out"]


async def test_a_filter_means_decisions_and_bad_events_are_refused(make_client: MakeClient) -> None:
    client = await sink_client(make_client, "sqlite")
    await add_sink(client, name="one", kind="webhook", target="http://127.0.0.1:9/", filter="decision=block",
                   events=["decisions", "access"])  # fmt: skip
    before = await (await client.get("/sinks")).json()
    base = {"name": "x", "kind": "webhook", "target": "http://127.0.0.1:9/"}
    cases = [
        ({**base, "events": ["access"], "filter": "decision=block"}, "filter"),
        ({**base, "events": []}, "events"),
        ({**base, "events": ["logins"]}, "events"),
        ({**base, "events": "access"}, "events"),
        ({**base, "events": [1]}, "events"),
    ]
    for body, field in cases:
        response = await client.post("/sinks", json=body)
        error = await response.json()
        assert response.status == 400 and error["field"] == field and error["detail"], (body, error)
    response = await client.patch("/sinks/one", json={"events": ["access"]})
    assert response.status == 400 and (await response.json())["field"] == "filter"
    assert await (await client.get("/sinks")).json() == before
    # Dropping the filter in the same change makes it an access-only sink.
    response = await client.patch("/sinks/one", json={"events": ["access"], "filter": ""})
    assert response.status == 200 and (await response.json())["events"] == ["access"]


@pytest.mark.slow
async def test_start_now_skips_past_access_events_and_a_restart_resumes_after_the_cursor(
    make_client: MakeClient,
) -> None:
    client = await sink_client(make_client, "sqlite")
    await record_events(client, [AccessEvent("sign-in", "ok", sub="old")])
    async with http_receiver(decode_webhook_both, "/hook") as receiver:
        sink = await add_sink(client, name="new", kind="webhook", target=receiver.url, events=["access"], start="now")
        receiver.secret = sink["secret"]
        await record_events(client, [AccessEvent("sign-in", "ok", sub=f"p{i}") for i in range(3)])
        await until(lambda: len(access_of(receiver)) == 3, what="the 3 events after the sink was added")
        await status_when(client, "new", lambda s: s["access_delivered"] == 3)
        await client.close()
        # A second server on the same file: the events stored meanwhile come, the delivered ones not again.
        client = await sink_client(make_client, "sqlite")
        await record_events(client, [AccessEvent("sign-out", "ok", sub=f"p{i}") for i in range(2)])
        await until(lambda: len(access_of(receiver)) == 5, what="the 2 events stored after the restart")
        subs = [(e["kind"], e["sub"]) for e in access_of(receiver)]
        assert subs == [("sign-in", "p0"), ("sign-in", "p1"), ("sign-in", "p2"), ("sign-out", "p0"), ("sign-out", "p1")]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_a_refused_access_event_is_dead_lettered_and_replayed(make_client: MakeClient, kind: str) -> None:
    client = await sink_client(make_client, kind)
    async with http_receiver(decode_webhook_both, "/hook") as receiver:
        accept = {"mallory": False}

        def behaviour(n: int, records: list[dict[str, Any]]) -> int:
            return 400 if any(r.get("sub") == "mallory" for r in records) and not accept["mallory"] else 200

        receiver.behaviour = behaviour
        sink = await add_sink(client, name="strict", kind="webhook", target=receiver.url, events=["access"])
        receiver.secret = sink["secret"]
        await record_events(client, SIGN_INS)
        await until(lambda: len(access_of(receiver)) == 2, what="the two good events")
        await status_when(client, "strict", lambda s: s["dead_letters"] == 1 and s["access_delivered"] == 2)
        dead = (await (await client.get("/sinks/strict/dead")).json())["items"]
        assert len(dead) == 1 and dead[0]["stream"] == "access" and dead[0]["record"]["sub"] == "mallory"
        assert dead[0]["decision_id"] == str(dead[0]["record"]["id"])
        accept["mallory"] = True
        replayed = await (await client.post("/sinks/strict/replay")).json()
        assert replayed == {"replayed": 1, "dead_letters": 0}
        assert [e["sub"] for e in access_of(receiver)][-1] == "mallory"


@pytest.mark.slow
async def test_a_created_token_reaches_the_sink_by_its_id_never_its_secret(
    make_client: MakeClient, tmp_path: Path
) -> None:
    client = await sink_client(make_client, "sqlite")
    db = str(client.app[SETTINGS_KEY].store.path)
    async with http_receiver(decode_webhook_both, "/hook") as receiver:
        sink = await add_sink(client, name="tokens", kind="webhook", target=receiver.url, events=["access"],
                              tenant_id="acme")  # fmt: skip
        receiver.secret = sink["secret"]
        cli = [sys.executable, "-m", "cavra_ingest", "token"]
        made = subprocess.run([*cli, "create", "--sqlite", db, "--scope", "read", "--tenant", "acme"],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert made.returncode == 0, made.stderr
        secret = made.stdout.strip().splitlines()[-1]
        token_id = made.stdout.split("created token ", 1)[1].split(" ", 1)[0]
        revoked = subprocess.run([*cli, "revoke", "--sqlite", db, token_id], capture_output=True, text=True, timeout=60)
        assert revoked.returncode == 0, revoked.stderr
        await until(lambda: len(access_of(receiver)) == 2, what="the token's creation and revocation")
        got = access_of(receiver)
        assert [e["kind"] for e in got] == ["token-created", "token-revoked"]
        assert all(token_id in e["detail"] and e["tenant_id"] == "acme" for e in got)
        assert secret not in json.dumps(receiver.records) and secret not in str(receiver.headers)


@pytest.mark.slow
async def test_postgres_an_access_event_committing_late_is_not_skipped(make_client: MakeClient) -> None:
    """Two replicas record events at once: one whose transaction commits last still reaches the sink."""
    import asyncpg

    from tests.conftest import POSTGRES_URL

    client = await sink_client(make_client, "postgres")
    schema = client.app[SETTINGS_KEY].store.postgres_schema
    async with http_receiver(decode_webhook_both, "/hook") as receiver:
        sink = await add_sink(client, name="order", kind="webhook", target=receiver.url, events=["access"])
        receiver.secret = sink["secret"]
        conn = await asyncpg.connect(POSTGRES_URL, server_settings={"search_path": schema})
        try:
            transaction = conn.transaction()
            await transaction.start()
            # Takes its xid and id now, commits only after the others were recorded and had time to be read.
            await conn.execute(
                "INSERT INTO access_events (kind, outcome, at, sub) VALUES ('sign-in', 'ok', $1, 'late')",
                "2026-03-01T10:00:00.000000+00:00",
            )
            await record_events(client, [AccessEvent("sign-in", "ok", sub=f"early-{i}") for i in range(3)])
            tables = client.app[SINK_TABLES_KEY]
            assert await tables.read_access_after((0, 0), 10, None) == [], "read past a running transaction"
            await transaction.commit()
        finally:
            await conn.close()
        await until(lambda: len(access_of(receiver)) == 4, what="all four")
        assert {e["sub"] for e in access_of(receiver)} == {"late", "early-0", "early-1", "early-2"}


# The tenant property, for the access stream: whatever the events and the batch size, reading after the cursor
# batch by batch (as the delivery loop does) gives a tenant sink exactly its tenant's events, in order, and an
# unbound sink every event, none twice.
EVENTS = st.lists(st.tuples(st.sampled_from(["ten-a", "ten-b", None]), st.sampled_from(["sign-in", "refusal"])),
                  max_size=25)  # fmt: skip


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=EVENTS, batch=st.integers(1, 6), sink_tenant=st.sampled_from(["ten-a", "ten-b", None]))
def test_a_tenant_sink_reads_only_its_tenants_access_events(
    events: list[tuple[str | None, str]], batch: int, sink_tenant: str | None
) -> None:
    import asyncio

    async def run(folder: str) -> None:
        config = Settings.of(activity_db=str(Path(folder) / "activity.db"))
        await make_store(config).migrate()
        from cavra_ingest.store.signin import signin_store

        store = signin_store(config)
        assert store is not None
        await store.open()
        for n, (tenant, kind) in enumerate(events):
            await store.record(AccessEvent(kind, "ok", sub=f"p{n}", tenant_id=tenant))
        await store.close()
        tables = SinkTables(config)
        await tables.open()
        try:
            position, seen = (0, 0), []
            while rows := await tables.read_access_after(position, batch, sink_tenant):
                assert len(rows) <= batch and rows[0][0] > position
                seen += [msgspec.json.decode(payload) for _, payload in rows]
                position = rows[-1][0]
            assert await tables.access_lag(position, sink_tenant) == 0
        finally:
            await tables.close()
        wanted = [f"p{n}" for n, (tenant, _) in enumerate(events) if sink_tenant is None or tenant == sink_tenant]
        assert [e["sub"] for e in seen] == wanted
        assert sink_tenant is None or {e.get("tenant_id") for e in seen} <= {sink_tenant}

    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(run(folder))
