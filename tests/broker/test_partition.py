"""A partitioned NATS node (issue: "Also: a partitioned node"): the cluster runs in network namespaces, one
node is cut off from its two peers while replicas post, then healed.

Replica A talks to the majority (n0, n1); replica B only to n2, the node that is cut off. Every 202 from
either is committed exactly once in PostgreSQL after the heal, and B's clients get errors, not acks, while
n2 cannot reach a quorum. `CAVRA_PARTITION_ROUNDS` (default 1) repeats the whole round.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from cavra_ingest.auditlog.notes import load_signer
from cavra_ingest.settings import Settings
from cavra_ingest.store.postgres.store import PostgresStore
from tests.broker.test_jetstream import Topology
from tests.conftest import POSTGRES_URL, decision, drop_schema, require_postgres
from tests.natscluster import Service
from tests.netpartition import NetCluster
from tests.pgcheck import check_schema

ROUNDS = int(os.environ.get("CAVRA_PARTITION_ROUNDS", "1"))
CUT_AT, HEAL_AT, END_AT = 1.5, 12.0, 15.0
# A publish in flight at the cut may still be acknowledged by the quorum it reached: B's answers are judged
# by when they were sent, from this long after the cut (the broker timeout is 3 s) until the heal. B has four
# senders because each refused request takes up to twice the broker timeout to come back.
SETTLE_S = 3.5


@dataclass
class Answers:
    """What each replica answered, with the time since the load began."""

    acked: set[str] = field(default_factory=set)
    seen: list[tuple[str, float, int]] = field(default_factory=list)  # (replica, at, status; 0: no answer)

    def during(self, replica: str, start: float, end: float) -> list[int]:
        return [status for who, at, status in self.seen if who == replica and start <= at < end]


async def sender(name: str, url: str, answers: Answers, began: float, stop: asyncio.Event, n: int) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=8)) as http:
        for i in itertools.count(n * 1000):
            if stop.is_set():
                return
            body = [decision(session_id=f"p-{name}-{(i + j) % 11}") for j in range(10)]
            sent = time.monotonic() - began
            try:
                async with http.post(f"{url}/decisions", json=body) as response:
                    status, reply = response.status, await response.json()
            except (aiohttp.ClientError, TimeoutError):
                answers.seen.append((name, sent, 0))
                await asyncio.sleep(0.05)
                continue
            answers.seen.append((name, sent, status))
            if status == 202:
                answers.acked.update(r["decision_id"] for r in reply["results"] if r["status"] == "accepted")
            else:
                assert status == 503, reply  # under a partition a replica refuses, retryably, or acks
                await asyncio.sleep(0.05)


@pytest.fixture
async def partitioned(tmp_path: Path) -> AsyncIterator[Topology]:
    require_postgres()
    schema = f"t_part_{uuid.uuid4().hex[:10]}"
    await PostgresStore(POSTGRES_URL, schema=schema).migrate()
    load_signer(tmp_path / "signing-key", Settings().audit.audit_log_origin, create=True)
    cluster = NetCluster(tmp_path / "nats")
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


async def start(topo: Topology, command: str, broker_url: str) -> Service:
    service = Service(
        command, topo.env() | {"CAVRA_BROKER_URL": broker_url}, topo.root / f"{command}-{len(topo.services)}.log"
    )
    topo.services.append(service)
    await service.start()
    return service


@pytest.mark.slow
@pytest.mark.parametrize("round_number", range(ROUNDS))
async def test_a_partitioned_node_acks_nothing_and_every_202_is_committed_once(partitioned, round_number):
    cluster: NetCluster = partitioned.cluster  # type: ignore[assignment]
    majority = await start(partitioned, "serve", cluster.url_of(0, 1))
    isolated = await start(partitioned, "serve", cluster.url_of(2))
    await start(partitioned, "worker", cluster.url_of(0, 1))
    answers, stop = Answers(), asyncio.Event()
    began = time.monotonic()
    senders = [
        asyncio.ensure_future(sender(name, url, answers, began, stop, n))
        for n, (name, url) in enumerate([("A", majority.url)] * 2 + [("B", isolated.url)] * 4)
    ]
    try:
        await asyncio.sleep(CUT_AT)
        cluster.isolate(2)
        await asyncio.sleep(HEAL_AT - CUT_AT)
        cluster.heal(2)
        await asyncio.sleep(END_AT - HEAL_AT)
    finally:
        stop.set()
        await asyncio.gather(*senders)
    # Before the cut both replicas acknowledged; while n2 was cut off, B acknowledged nothing and A went on.
    assert 202 in answers.during("B", 0, CUT_AT), answers.seen[:20]
    cut_off = answers.during("B", CUT_AT + SETTLE_S, HEAL_AT)
    assert cut_off and 202 not in cut_off, cut_off
    assert answers.during("A", CUT_AT + SETTLE_S, HEAL_AT).count(202) > 0
    await partitioned.committed(answers.acked, timeout=60)
    stored = await check_schema(POSTGRES_URL, partitioned.schema, leaves=True)  # once each, in the log too
    assert stored["ids"] >= answers.acked
    print(
        f"partition round {round_number}: {len(answers.acked)} decisions acked, all committed once; cut off: "
        f"B refused {len(cut_off)} of {len(cut_off)} requests, A acknowledged "
        f"{answers.during('A', CUT_AT, HEAL_AT).count(202)} requests"
    )
