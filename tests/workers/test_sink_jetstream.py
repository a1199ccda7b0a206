"""JetStream mode with two replicas: one of them delivers each sink (the lease), and after kill -9 of that
one the other takes over; every accepted decision reaches the receiver once committed."""

from __future__ import annotations

import time

import aiohttp
import asyncpg

from tests.broker.test_jetstream import Topology, run_load, topology  # noqa: F401  (the fixture)
from tests.conftest import POSTGRES_URL
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


async def test_two_replicas_deliver_each_sink_once_and_take_over(topology: Topology) -> None:  # noqa: F811
    base = topology.env
    topology.env = lambda db_url=None: {**base(), **SINK_ENV}  # type: ignore[method-assign,misc]
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
