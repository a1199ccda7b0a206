"""JetStream mode end to end: replicas publish to a three-node R3 stream, workers commit to PostgreSQL.

Every process is real (`cavra-ingest serve` / `worker`, `nats-server`), on loopback ports. Faults: kill -9 of a
replica, of a worker and of one NATS node under load, and PostgreSQL unreachable from the worker for a few
seconds (a TCP proxy the test controls; the machine's shared PostgreSQL server is never stopped).
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import nats
import pytest

from cavra_ingest.auditlog.notes import load_signer
from cavra_ingest.broker.jetstream import STREAM, partition
from cavra_ingest.settings import Settings
from cavra_ingest.store.postgres.store import PostgresStore
from tests.conftest import POSTGRES_URL, decision, drop_schema, require_postgres
from tests.natscluster import Cluster, Outage, Service
from tests.pgcheck import check_schema

_batch = itertools.count()


@dataclass
class Topology:
    root: Path
    schema: str
    cluster: Cluster
    services: list[Service] = field(default_factory=list)

    def env(self, db_url: str = POSTGRES_URL) -> dict[str, str]:
        return {
            "CAVRA_ACTIVITY_DB": db_url,
            "CAVRA_POSTGRES_SCHEMA": self.schema,
            "CAVRA_BROKER_URL": self.cluster.url,
            "CAVRA_STREAM_REPLICAS": "3",
            "CAVRA_SIGNING_KEY": str(self.root / "signing-key"),
            "CAVRA_UVLOOP": "0",
            "CAVRA_BROKER_TIMEOUT_S": "3",
            "CAVRA_WORKER_ACK_WAIT_S": "3",
            "CAVRA_STREAM_PARTITIONS": "4",
        }

    async def start(self, command: str, db_url: str = POSTGRES_URL) -> Service:
        service = Service(command, self.env(db_url), self.root / f"{command}-{len(self.services)}.log")
        self.services.append(service)
        await service.start()
        return service

    async def stored_ids(self, tenant_id: str, decision: str) -> set[str]:
        """The ids PostgreSQL holds for one tenant's decisions of one outcome."""
        conn = await asyncpg.connect(POSTGRES_URL, server_settings={"search_path": self.schema})
        try:
            rows = await conn.fetch("SELECT decision_id FROM activity_decisions WHERE tenant_id = $1 AND decision = $2",
                                    tenant_id, decision)  # fmt: skip
            return {row["decision_id"] for row in rows}
        finally:
            await conn.close()

    async def committed(self, ids: set[str], timeout: float = 60.0) -> float:
        """Wait until every id is in PostgreSQL; return the seconds waited."""
        started = time.monotonic()
        conn = await asyncpg.connect(POSTGRES_URL, server_settings={"search_path": self.schema})
        try:
            while True:
                found = await conn.fetchval("SELECT count(*) FROM activity_decisions WHERE decision_id = ANY($1)",
                                            list(ids))  # fmt: skip
                if found == len(ids):
                    return time.monotonic() - started
                if time.monotonic() - started > timeout:
                    raise AssertionError(f"{len(ids) - found} of {len(ids)} acknowledged decisions never committed")
                await asyncio.sleep(0.1)
        finally:
            await conn.close()


@pytest.fixture
async def topology(tmp_path: Path) -> AsyncIterator[Topology]:
    require_postgres()
    schema = f"t_js_{uuid.uuid4().hex[:10]}"
    # Migrated once up front, and one signing key for every process, as a deployment provisions them.
    await PostgresStore(POSTGRES_URL, schema=schema).migrate()
    load_signer(tmp_path / "signing-key", Settings().audit.audit_log_origin, create=True)
    cluster = Cluster(tmp_path / "nats")
    cluster.root.mkdir()
    topo = Topology(tmp_path, schema, cluster)
    try:
        await cluster.start()
        yield topo
    finally:
        for service in topo.services:
            service.stop()
        cluster.stop()
        await drop_schema(schema)


async def post(http: aiohttp.ClientSession, url: str, body: list[dict]) -> tuple[int, dict]:
    async with http.post(f"{url}/decisions", json=body) as response:
        return response.status, await response.json()


async def load(urls: list[str], acked: set[str], stop: asyncio.Event, *, batch: int = 20, senders: int = 4) -> int:
    """Post batches round-robin until stopped; collect the ids every 202 accepted. Return requests refused."""
    refused = 0

    async def sender(n: int) -> None:
        nonlocal refused
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            for i in itertools.count(n):
                if stop.is_set():
                    return
                body = [decision(session_id=f"s-{(i * 7 + j) % 13}", decision="block" if j % 5 == 0 else "allow")
                        for j in range(batch)]  # fmt: skip
                try:
                    status, reply = await post(http, urls[i % len(urls)], body)
                except (aiohttp.ClientError, TimeoutError):
                    refused += 1
                    await asyncio.sleep(0.05)
                    continue
                if status == 202:
                    acked.update(r["decision_id"] for r in reply["results"] if r["status"] == "accepted")
                else:
                    assert status == 503, reply  # nothing else is acceptable under faults
                    refused += 1
                    await asyncio.sleep(0.05)

    await asyncio.gather(*(sender(n) for n in range(senders)))
    return refused


async def run_load(urls: list[str], seconds: float, fault=None, at: float = 1.0) -> set[str]:
    """Load for `seconds`, calling `fault()` after `at` seconds; return the acknowledged ids."""
    acked: set[str] = set()
    stop = asyncio.Event()
    task = asyncio.ensure_future(load(urls, acked, stop))
    await asyncio.sleep(at)
    if fault is not None:
        result = fault()
        if asyncio.iscoroutine(result):
            await result
    await asyncio.sleep(max(0.0, seconds - at))
    stop.set()
    await task
    return acked


@pytest.mark.slow
async def test_replica_answers_202_and_a_worker_commits_with_summaries(topology):
    replica = await topology.start("serve")
    await topology.start("worker")
    records = [decision(session_id="s-js", decision="block" if i % 3 == 0 else "allow") for i in range(30)]
    async with aiohttp.ClientSession() as http:
        status, reply = await post(http, replica.url, records)
        assert status == 202 and reply["accepted"] == 30 and reply["created"] == 0
        assert {r["status"] for r in reply["results"]} == {"accepted"}
        single = decision(session_id="s-js")
        async with http.post(f"{replica.url}/decisions", json=single) as response:
            assert response.status == 202
            assert (await response.json())["accepted"] is True
        await topology.committed({r["decision_id"] for r in records} | {single["decision_id"]})
        # Reads come from PostgreSQL, through any replica.
        async with http.get(f"{replica.url}/sessions/s-js") as response:
            session = await response.json()
        assert session["decision_count"] == 31 and session["blocked_count"] == 10
        # The same id with other content: accepted by the replica, refused by the worker, and reported.
        rival = dict(records[0], session_id="s-other")
        status, reply = await post(http, replica.url, [rival])
        assert status == 202
        deadline = time.monotonic() + 30
        while True:
            async with http.get(f"{replica.url}/ingest/rejections", params={"decision_id": rival["decision_id"]}) as r:
                page = await r.json()
            if page["items"] or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert [(i["status"], i["session_id"]) for i in page["items"]] == [("conflict", "s-other")]
        # Session updates still answer with the stored summary, written directly.
        async with http.post(f"{replica.url}/sessions", json={"session_id": "s-js", "state": "completed"}) as r:
            assert r.status == 200 and (await r.json())["state"] == "completed"
        # The audit log: every committed decision gets its leaf from the sequencer, then a proof.
        deadline = time.monotonic() + 10
        while True:
            async with http.get(f"{replica.url}/decisions/{single['decision_id']}/proof") as r:
                if r.status == 200 or time.monotonic() > deadline:
                    break
                assert r.status == 503 and "Retry-After" in r.headers
            await asyncio.sleep(0.2)
        assert r.status == 200
    stored = await check_schema(POSTGRES_URL, topology.schema, leaves=True)
    assert len(stored["ids"]) == 31
    # The stream is replicated on the three nodes and its subjects are the configured partitions.
    nc = await nats.connect(topology.cluster.url.split(","))
    try:
        info = await nc.jetstream().stream_info(STREAM, subjects_filter=">")
    finally:
        await nc.close()
    assert info.config.num_replicas == 3 and len(info.cluster.replicas) == 2
    expected = {f"cavra.decisions.{partition(s, 4)}" for s in ("s-js", "s-other")}
    assert set(info.state.subjects) == expected


def test_partitions_are_stable_and_spread():
    assert partition("sess-42", 16) == zlib.crc32(b"sess-42") % 16  # the same on every replica and restart
    assert len({partition(f"s-{i}", 16) for i in range(200)}) == 16


class CreatingPeer:
    """A JetStream manager while another replica creates the streams: `hidden` looks find nothing and the
    creations fail, then the streams are there."""

    def __init__(self, hidden: int) -> None:
        self.hidden = hidden
        self.looks = 0

    async def stream_info(self, name: str) -> str:
        from nats.js.errors import NotFoundError

        self.looks += 1
        if self.looks <= self.hidden:
            raise NotFoundError
        return name

    async def add_stream(self, config: object) -> None:
        raise RuntimeError("stream name already in use")


@pytest.mark.slow
async def test_a_replica_waits_for_streams_another_is_creating_up_to_the_broker_timeout():
    from cavra_ingest.broker.jetstream import ensure_streams

    peer = CreatingPeer(hidden=3)
    await ensure_streams(peer, Settings.from_env({"CAVRA_BROKER_TIMEOUT_S": "5"}))
    assert peer.looks == 3 + 2  # the third look's failure retried, then each stream found once
    never = CreatingPeer(hidden=10**9)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="already in use"):
        await ensure_streams(never, Settings.from_env({"CAVRA_BROKER_TIMEOUT_S": "0.3"}))
    assert 0.3 <= time.monotonic() - started < 3 and never.looks > 1


def test_worker_refuses_to_start_without_a_broker_and_postgres(monkeypatch, capsys):
    from cavra_ingest.cli import main as cli

    monkeypatch.delenv("CAVRA_BROKER_URL", raising=False)
    assert cli.main(["worker"]) == 2
    assert "needs CAVRA_BROKER_URL" in capsys.readouterr().out


@pytest.mark.slow
async def test_replica_refuses_with_503_when_the_log_is_unreachable(topology):
    replica = await topology.start("serve")
    for index in range(3):
        topology.cluster.kill(index)
    async with aiohttp.ClientSession() as http:
        status, reply = await post(http, replica.url, [decision()])
        assert status == 503 and "retry" in reply["detail"]
        async with http.get(f"{replica.url}/readyz") as response:
            assert response.status == 503
            assert (await response.json())["reason"] == "the JetStream log is unreachable"


@pytest.mark.slow
async def test_kill_a_worker_under_load_loses_and_doubles_nothing(topology):
    replica = await topology.start("serve")
    first = await topology.start("worker")
    await topology.start("worker")
    acked = await run_load([replica.url], 4.0, first.kill, at=1.5)
    assert len(acked) > 200
    await topology.committed(acked)
    stored = await check_schema(POSTGRES_URL, topology.schema, leaves=False)
    assert stored["ids"] >= acked


@pytest.mark.slow
async def test_kill_a_replica_under_load_every_202_is_committed(topology):
    replicas = [await topology.start("serve"), await topology.start("serve")]
    await topology.start("worker")
    acked = await run_load([r.url for r in replicas], 4.0, replicas[0].kill, at=1.5)
    assert len(acked) > 200
    await topology.committed(acked)
    stored = await check_schema(POSTGRES_URL, topology.schema)
    assert stored["ids"] >= acked


@pytest.mark.slow
async def test_kill_one_nats_node_under_load_every_202_is_committed(topology):
    replica = await topology.start("serve")
    await topology.start("worker")
    acked = await run_load([replica.url], 6.0, lambda: topology.cluster.kill(0), at=1.5)
    assert len(acked) > 200
    await topology.committed(acked)
    stored = await check_schema(POSTGRES_URL, topology.schema)
    assert stored["ids"] >= acked


@pytest.mark.slow
async def test_postgres_outage_backlog_drains_after_it_returns(topology):
    target = urlsplit(POSTGRES_URL)
    outage = Outage(target.hostname or "127.0.0.1", target.port or 5432)
    await outage.start()
    try:
        replica = await topology.start("serve")
        proxied = POSTGRES_URL.replace(f"{target.hostname}:{target.port or 5432}", f"127.0.0.1:{outage.port}")
        worker = await topology.start("worker", db_url=proxied)
        acked: set[str] = set()
        stop = asyncio.Event()
        task = asyncio.ensure_future(load([replica.url], acked, stop))
        await asyncio.sleep(1.0)
        outage.cut()
        before = len(acked)
        await asyncio.sleep(3.0)
        # Replicas kept accepting into JetStream while the worker could not reach the database.
        assert len(acked) > before + 100
        outage.restore()
        await asyncio.sleep(1.0)
        stop.set()
        await task
        waited = await topology.committed(acked, timeout=60)
        assert "store unavailable" in worker.log()  # the worker saw the outage and handed messages back
        assert waited < 60
        await check_schema(POSTGRES_URL, topology.schema)
    finally:
        await outage.close()


@pytest.mark.slow
async def test_quota_charges_travel_with_the_records_to_the_worker(topology):
    from datetime import UTC, datetime

    from cavra_ingest.http.quota import utc_day
    from cavra_ingest.store.tokens import PostgresTokens, new_token

    token, secret = new_token(["ingest", "read"], tenant_id="ten-q", daily_quota=5)
    tokens = PostgresTokens(POSTGRES_URL, topology.schema)
    await tokens.open()
    try:
        await tokens.create(token, secret)
        replica = await topology.start("serve")
        await topology.start("worker")
        headers = {"Authorization": f"Bearer {secret}"}
        first = [decision(session_id="s-quota") for _ in range(3)]
        async with aiohttp.ClientSession(headers=headers) as http:
            async with http.post(f"{replica.url}/decisions", json=first) as response:
                assert response.status == 202
            await topology.committed({d["decision_id"] for d in first})
            # The worker added them to the token's usage in the transaction that created them.
            assert await tokens.usage(token.id, utc_day(datetime.now(UTC))) == 3
            async with http.post(f"{replica.url}/decisions", json=[decision(session_id="s-quota")] * 3) as response:
                assert response.status == 429 and "daily quota of 5" in (await response.json())["detail"]
            rest = [decision(session_id="s-quota") for _ in range(2)]
            async with http.post(f"{replica.url}/decisions", json=rest) as response:
                assert response.status == 202
            await topology.committed({d["decision_id"] for d in rest})
            async with http.post(f"{replica.url}/decisions", json=decision(session_id="s-quota")) as response:
                assert response.status == 429
        assert await tokens.usage(token.id, utc_day(datetime.now(UTC))) == 5
    finally:
        await tokens.close()
