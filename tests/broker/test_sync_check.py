"""The JetStream mode reads each NATS server's /varz at start-up and warns unless it syncs every write."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cavra_ingest.broker.jetstream import check_sync, connect
from cavra_ingest.settings import Settings
from tests.natscluster import Cluster, nats_version

WARNING = "does not sync its stream files on every write"


@pytest.fixture(params=[None, "always"], ids=["default-sync", "sync-always"])
async def server(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Cluster]:
    cluster = Cluster(tmp_path, size=1, sync_interval=request.param)
    await cluster.start()
    if nats_version() < (2, 10, 0):
        cluster.stop()
        pytest.skip("this nats-server is too old to report sync_always in /varz")
    try:
        yield cluster
    finally:
        cluster.stop()


def monitor(cluster: Cluster) -> str:
    return f"http://127.0.0.1:{cluster.nodes[0].monitor_port}"


async def test_a_server_that_syncs_on_a_timer_is_warned_about_and_one_that_always_syncs_is_not(
    server: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings.of(broker_url=server.url, broker_monitor_url=monitor(server))
    always = server.sync_interval == "always"
    with caplog.at_level(logging.INFO, logger="cavra_ingest.broker.jetstream"):
        nc = await connect(settings)  # the start-up path of `serve` and `worker`
        await nc.close()
    assert (WARNING in caplog.text) is not always, caplog.text
    assert await check_sync(settings) == {monitor(server): always}


async def test_an_unreadable_monitoring_address_is_said_and_not_taken_for_synced(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tests.procs import free_port

    url = f"http://127.0.0.1:{free_port()}"
    with caplog.at_level(logging.WARNING, logger="cavra_ingest.broker.jetstream"):
        assert await check_sync(Settings.of(broker_monitor_url=url)) == {url: None}
    assert "cannot read" in caplog.text


def test_the_setting_takes_http_addresses_only() -> None:
    from cavra_ingest.settings import SettingsError

    with pytest.raises(SettingsError, match="CAVRA_BROKER_MONITOR_URL: expected comma-separated http://"):
        Settings.from_env({"CAVRA_BROKER_MONITOR_URL": "nats://127.0.0.1:4222"})
