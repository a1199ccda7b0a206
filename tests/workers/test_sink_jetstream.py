"""JetStream mode with two replicas: one of them delivers each sink (the lease), and after kill -9 of that
one the other takes over; every accepted decision reaches the receiver once committed."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.broker.test_jetstream import Topology, run_load, topology  # noqa: F401  (the fixture)
from tests.conftest import POSTGRES_URL, decision
from tests.natscluster import Service
from tests.sinkreceivers import decode_webhook, http_receiver, until
from tests.workers.test_sink_faults import parent_of

SINK_ENV = {"CAVRA_SINK_BATCH_MS": "20", "CAVRA_SINK_LEASE_S": "2", "CAVRA_SINK_BACKOFF_S": "0.05"}


async def holder_parent(topo: Topology) -> int | None:
    """The pid of the replica whose delivery child holds the sink's lease now."""
    conn = await asyncpg.connect(POSTGRES_URL, server_settings={"search_path": topo.schema})
    try:
        holder = await conn.fetchval("SELECT holder FROM sink_leases WHERE name = 'siem' AND expires_at >= $1",
                                     time.time())  # fmt: skip
    finally:
        await conn.close()
    return None if holder is None else parent_of(holder)


@pytest.mark.slow
async def test_two_replicas_deliver_each_sink_once_and_take_over(topology: Topology) -> None:  # noqa: F811
    base = topology.env
    key = {"CAVRA_SINK_KEY_FILE": str(topology.root / "sink-key")}  # not the working directory's .cavra/
    topology.env = lambda db_url=None: {**base(), **SINK_ENV, **key}  # type: ignore[method-assign,misc]
    replicas = [await topology.start("serve"), await topology.start("serve")]
    await topology.start("worker")
    async with http_receiver(decode_webhook, "/hook") as receiver, aiohttp.ClientSession() as http:
        body = {"name": "siem", "kind": "webhook", "target": receiver.url}
        async with http.post(f"{replicas[0].url}/sinks", json=body) as response:
            assert response.status == 201, await response.text()
            receiver.secret = (await response.json())["secret"]
        first = await run_load([r.url for r in replicas], 2.0)
        await until(lambda: receiver.ids() >= first, timeout_s=60, what="delivery of the first load")
        pids = [r.proc.pid for r in replicas if r.proc is not None]
        parent = await holder_parent(topology)
        assert parent in pids, (parent, pids)
        holder = replicas[pids.index(parent)]
        survivor = replicas[1 - pids.index(parent)]
        assert len(receiver.records) == len(receiver.ids()), "one deliverer: no duplicates"
        holder.kill()
        later = await run_load([survivor.url], 2.0)
        await until(lambda: receiver.ids() >= first | later, timeout_s=60, what="delivery after the takeover")
        assert await holder_parent(topology) == pids[replicas.index(survivor)]
        assert not receiver.problems


def pid_of(service: Service) -> int:
    assert service.proc is not None
    return service.proc.pid


async def tenant_load(urls: list[str], sent: dict[str, dict[str, Any]], stop: asyncio.Event) -> None:
    """Post batches of two tenants' decisions round-robin until stopped; keep those a 202 accepted."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        for i in itertools.count():
            if stop.is_set():
                return
            # A session belongs to one tenant (the worker refuses one that changes tenant).
            tenants = [("ten-a", "ten-b")[j % 2] for j in range(20)]
            body = [decision(session_id=f"s-{t}-{j % 5}", tenant_id=t,
                             decision="block" if (i + j) % 3 == 0 else "allow")
                    for j, t in enumerate(tenants)]  # fmt: skip
            try:
                async with http.post(f"{urls[i % len(urls)]}/decisions", json=body) as response:
                    reply = await response.json()
                    if response.status == 202:
                        accepted = {r["decision_id"] for r in reply["results"] if r["status"] == "accepted"}
                        sent.update((r["decision_id"], r) for r in body if r["decision_id"] in accepted)
                        continue
            except (aiohttp.ClientError, TimeoutError, ValueError):
                pass  # that replica is down (killed by the test): the next request goes to the other
            await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_two_replicas_kill_9_mid_stream_then_restart_loses_nothing(topology: Topology) -> None:  # noqa: F811
    """The issue's faults in JetStream mode: bad input refused, a receiver answering 500 then 200, a poisoned
    record dead-lettered, a tenant sink, and kill -9 of the lease holder while the sink lags, then its restart."""
    base = topology.env
    extra = {**SINK_ENV, "CAVRA_SINK_BATCH_MAX": "50", "CAVRA_SINK_KEY_FILE": str(topology.root / "sink-key")}
    topology.env = lambda db_url=None: {**base(), **extra}  # type: ignore[method-assign,misc]
    replicas = [await topology.start("serve"), await topology.start("serve")]
    await topology.start("worker")
    urls = [r.url for r in replicas]
    poison = decision(session_id="s-poison", tenant_id="ten-b", decision_id=f"dec-poison-{uuid.uuid4().hex[:8]}")
    async with (
        http_receiver(decode_webhook, "/hook") as receiver,
        http_receiver(decode_webhook, "/tenant") as tenant,
        aiohttp.ClientSession() as http,
    ):
        # 500 for the first five requests, then 200, and 400 for any batch holding the poisoned record.
        receiver.behaviour = lambda n, records: (
            500 if n <= 5 else 400 if any(r["decision_id"] == poison["decision_id"] for r in records) else 200
        )
        body = {"name": "siem", "kind": "webhook", "target": receiver.url}
        async with http.post(f"{urls[0]}/sinks", json=body) as response:
            assert response.status == 201, await response.text()
            receiver.secret = (await response.json())["secret"]
        body = {"name": "ten-a", "kind": "webhook", "target": tenant.url, "tenant_id": "ten-a",
                "filter": "decision=block"}  # fmt: skip
        async with http.post(f"{urls[1]}/sinks", json=body) as response:
            assert response.status == 201, await response.text()
            tenant.secret = (await response.json())["secret"]
        # Bad input through either replica: a clear 4xx naming the field, and nothing changes.
        before = await (await http.get(f"{urls[0]}/sinks")).json()
        for bad, expected, field in (
            ({"name": "x", "kind": "carrier-pigeon", "target": "http://h/"}, 400, "kind"),
            ({"name": "x", "kind": "webhook", "target": "not a url"}, 400, "target"),
            ({"name": "x", "kind": "webhook", "target": "http://h/", "filter": "decision=maybe"}, 400, "filter"),
            ({"name": "siem", "kind": "webhook", "target": "http://h/"}, 409, "name"),
        ):
            async with http.post(f"{urls[1]}/sinks", json=bad) as response:
                error = await response.json()
                assert (response.status, error["field"]) == (expected, field), (bad, error)
        assert await (await http.get(f"{urls[1]}/sinks")).json() == before

        async with http.post(f"{urls[0]}/decisions", json=[poison]) as response:
            assert response.status == 202
        sent: dict[str, dict[str, Any]] = {poison["decision_id"]: poison}
        stop = asyncio.Event()
        loader = asyncio.ensure_future(tenant_load(urls, sent, stop))
        try:
            await until(lambda: len(receiver.ids()) >= 200, timeout_s=60, what="delivery under way")
            receiver.delay_s = 0.3  # the sink falls behind the load
            await until(lambda: len(set(sent) - receiver.ids()) >= 300, timeout_s=60, what="a lagging sink")
            parent = await holder_parent(topology)
            pids = [pid_of(r) for r in replicas]
            assert parent in pids, (parent, pids)
            holder = replicas[pids.index(parent)]
            async with http.get(f"{urls[0]}/sinks/siem") as response:
                behind = (await response.json())["lag_records"]
            holder.kill()
            assert behind > 0, "the kill came with nothing committed left to deliver"
            seen = len(sent)
            await until(lambda: len(sent) >= seen + 200, timeout_s=60, what="ingest through the survivor")
            await holder.start()  # on its old port: the load goes to both again
            seen = len(sent)
            await until(lambda: len(sent) >= seen + 200, timeout_s=60, what="ingest through both")
        finally:
            stop.set()
            await loader
        receiver.delay_s = 0.0
        await topology.committed(set(sent))
        good = set(sent) - {poison["decision_id"]}
        await until(lambda: receiver.ids() >= good, timeout_s=90, what="every committed decision")
        assert poison["decision_id"] not in receiver.ids() and not receiver.problems
        async with http.get(f"{urls[0]}/sinks/siem/dead") as response:
            dead = await response.json()
        assert [item["decision_id"] for item in dead["items"]] == [poison["decision_id"]]
        # At least once: one crash of the holder re-sends at most the batch it had in flight.
        duplicates = len(receiver.records) - len(receiver.ids())
        assert duplicates <= 50, (duplicates, len(sent), behind)
        mine = {i for i, r in sent.items() if r["tenant_id"] == "ten-a" and r["decision"] == "block"}
        await until(lambda: tenant.ids() >= mine, timeout_s=60, what="tenant a's blocks")
        # The tenant sink read everything (lag 0) and took exactly its tenant's committed blocks. Those can be
        # more than the acknowledged ones: a post cut off by the kill may have reached the log before its 202,
        # and the worker commits it in its partition's turn.
        deadline = time.monotonic() + 30
        while (shown := await (await http.get(f"{urls[1]}/sinks/ten-a")).json())["lag_records"] or (
            tenant.ids() != await topology.stored_ids("ten-a", "block")
        ):
            assert time.monotonic() < deadline, (shown, len(tenant.ids()))
            await asyncio.sleep(0.2)
        assert mine <= tenant.ids() and not tenant.problems
        assert all(r["tenant_id"] == "ten-a" for r in tenant.records)
        assert await holder_parent(topology) in [pid_of(r) for r in replicas]
