"""A worker across a restart of the whole NATS cluster (what a power cut of every node looks like to it).

The power-loss campaign (tests/powerloss_js.py) found rounds where the stream stopped draining after all three
nodes came back. These tests reproduce it without a lossy filesystem: a worker started while the restarted
cluster has no stream leader yet, and a running worker whose cluster is killed and restarted under it.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.broker.test_jetstream import run_load, topology  # noqa: F401  (the fixture)
from tests.conftest import POSTGRES_URL
from tests.natscluster import Cluster
from tests.pgcheck import check_schema


def restart_cluster(cluster: Cluster, first: int = 3) -> None:
    """kill -9 every node, then start the first `first` of them again on their own ports and stores."""
    cluster.stop()
    for node in cluster.nodes[:first]:
        cluster.start_node(node)


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_worker_started_before_the_stream_has_a_leader_waits_for_it_then_drains(topology):  # noqa: F811
    """One node of three up: no quorum, so the stream cannot answer. The worker used to exit on the timeout
    of its first `stream_info`, leaving the stream undrained (the campaign's harness, reading a log shared
    with earlier workers, took it for started)."""
    replica = await topology.start("serve")
    setup = await topology.start("worker")  # makes the consumer
    setup.stop()
    acked = await run_load([replica.url], 2.0)  # nobody consumes: all of it stays pending
    assert len(acked) > 100
    restart_cluster(topology.cluster, first=1)
    starting = asyncio.ensure_future(topology.start("worker"))
    await asyncio.sleep(5.0)  # longer than CAVRA_BROKER_TIMEOUT_S (3 s), after which the old worker gave up
    assert not starting.done(), starting.exception()
    worker = topology.services[-1]
    assert worker.proc is not None and worker.proc.poll() is None, worker.log()[-2000:]
    assert "waiting for the JetStream log" in worker.log(), worker.log()[-2000:]
    for node in topology.cluster.nodes[1:]:
        topology.cluster.start_node(node)
    await asyncio.wait_for(starting, 60)
    await topology.committed(acked)
    stored = await check_schema(POSTGRES_URL, topology.schema, leaves=False)
    assert stored["ids"] >= acked
    assert worker.proc.poll() is None


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_a_running_worker_drains_after_the_whole_cluster_is_killed_and_restarted(topology):  # noqa: F811
    """Messages delivered to the worker just before the kill and never acknowledged must come back to it (ack
    wait 3 s) on the restarted cluster, and everything posted after the restart must be committed too, by the
    same worker process, with nobody restarting it."""
    replica = await topology.start("serve")
    worker = await topology.start("worker")

    async def cut() -> None:
        restart_cluster(topology.cluster)
        await topology.cluster.wait_ready(60)

    acked = await run_load([replica.url], 8.0, cut, at=1.5)
    assert len(acked) > 200
    await topology.committed(acked, timeout=90)
    assert worker.proc is not None and worker.proc.poll() is None, worker.log()[-2000:]
    stored = await check_schema(POSTGRES_URL, topology.schema, leaves=False)
    assert stored["ids"] >= acked


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_running_worker_whose_consumer_vanished_binds_a_new_one_and_drains(topology):  # noqa: F811
    """A cut can take the consumer's state with it (or an operator deletes it): the worker's fetches then fail
    on every try. It used to log that forever; it now binds again, which creates the consumer, and the new
    consumer replays the stream from its start (stored once: the replays are duplicates)."""
    import nats

    from cavra_ingest.broker.jetstream import DURABLE, STREAM

    replica = await topology.start("serve")
    worker = await topology.start("worker")
    first = await run_load([replica.url], 1.5)
    await topology.committed(first)
    nc = await nats.connect(servers=topology.cluster.url.split(","))
    try:
        assert await nc.jetstream(timeout=5).delete_consumer(STREAM, DURABLE)
    finally:
        await nc.close()
    second = await run_load([replica.url], 1.5)
    await topology.committed(first | second)
    assert "binding the consumer again" in worker.log(), worker.log()[-2000:]
    assert worker.proc is not None and worker.proc.poll() is None
    stored = await check_schema(POSTGRES_URL, topology.schema, leaves=False)
    assert stored["ids"] >= first | second


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_a_waiting_worker_stops_at_once_on_sigterm(topology):  # noqa: F811
    """Waiting for a cluster that is down must not make the worker deaf to `docker stop`: exit status 0."""
    import signal
    import time

    topology.cluster.stop()
    starting = asyncio.ensure_future(topology.start("worker"))
    await asyncio.sleep(0)  # the process is started
    worker = topology.services[-1]
    while "NATS connection" not in worker.log():  # it is trying to connect
        assert not starting.done(), starting.exception()
        await asyncio.sleep(0.05)
    assert worker.proc is not None
    sent = time.monotonic()
    worker.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(worker.proc.wait, 10) == 0, worker.log()[-2000:]
    assert time.monotonic() - sent < 5
    starting.cancel()
    await asyncio.gather(starting, return_exceptions=True)
