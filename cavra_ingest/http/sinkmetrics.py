"""The sinks in `/metrics` (per sink: delivered, failed, dead-lettered, lag, last success) and `/healthz`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from cavra_ingest.http.replies import SinkLag, SinksHealth

if TYPE_CHECKING:  # the wiring builds the delivery; this module only reads it
    from workers.delivery import Delivery


class SinkCollector(Collector):
    """Read at each scrape from what this process's delivery last saw of every sink."""

    def __init__(self, delivery: Delivery) -> None:
        self.delivery = delivery

    def collect(self) -> Iterator[Any]:
        delivered = CounterMetricFamily("cavra_sink_delivered", "Events the sink's receiver took", labels=["sink"])
        failed = CounterMetricFamily("cavra_sink_failed", "Failed delivery attempts (retried)", labels=["sink"])
        dead = GaugeMetricFamily("cavra_sink_dead_letters", "Events in the sink's dead letters", labels=["sink"])
        lag = GaugeMetricFamily("cavra_sink_lag_records", "Committed decisions the sink has not read", labels=["sink"])
        lag_s = GaugeMetricFamily("cavra_sink_lag_seconds", "Seconds since the sink was last caught up",
                                  labels=["sink"])  # fmt: skip
        success = GaugeMetricFamily("cavra_sink_last_success_timestamp_seconds",
                                    "Unix time of the sink's last delivery", labels=["sink"])  # fmt: skip
        held = GaugeMetricFamily(
            "cavra_sink_held", "1 while a process holds the sink's delivery lease", labels=["sink"]
        )
        for name, stats in sorted(self.delivery.stats.items()):
            delivered.add_metric([name], stats.delivered)
            failed.add_metric([name], stats.failed)
            dead.add_metric([name], stats.dead_lettered)
            lag.add_metric([name], stats.lag_records)
            lag_s.add_metric([name], stats.lag_s)
            if stats.last_success is not None:
                success.add_metric([name], stats.last_success)
            held.add_metric([name], 1 if stats.held else 0)
        yield from (delivered, failed, dead, lag, lag_s, success, held)


def sinks_health(delivery: Delivery) -> SinksHealth:
    alert = delivery.settings.sink_lag_alert_s
    lagging = [SinkLag(name, stats.lag_records, stats.lag_s) for name, stats in sorted(delivery.stats.items())
               if stats.lag_records and stats.lag_s > alert]  # fmt: skip
    return SinksHealth(len(delivery.stats), lagging)
