"""JetStream mode with two replicas: one of them delivers each sink (the lease), and after kill -9 of that
one the other takes over; every accepted decision reaches the receiver once committed."""

from __future__ import annotations

import aiohttp

from tests.sinkreceivers import decode_webhook, http_receiver, until
from tests.test_jetstream import Topology, run_load, topology  # noqa: F401  (the fixture)

SINK_ENV = {"CAVRA_SINK_BATCH_MS": "20", "CAVRA_SINK_LEASE_S": "2", "CAVRA_SINK_BACKOFF_S": "0.05"}


async def held(http: aiohttp.ClientSession, url: str) -> bool:
    async with http.get(f"{url}/metrics") as response:
        return 'cavra_sink_held{sink="siem"} 1.0' in await response.text()


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
        holders = [await held(http, r.url) for r in replicas]
        assert holders.count(True) == 1, holders
        holder = replicas[holders.index(True)]
        survivor = replicas[1 - holders.index(True)]
        holder.kill()
        later = await run_load([survivor.url], 2.0)
        await until(lambda: receiver.ids() >= first | later, timeout_s=60, what="delivery after the takeover")
        assert await held(http, survivor.url)
        assert not receiver.problems
