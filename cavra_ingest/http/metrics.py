"""Prometheus metrics (`GET /metrics`): one registry per app, counted in middleware and around the writer.

Label values come only from bounded sets: route templates (never raw paths), status codes, record
outcomes, and the tenant an auth token is bound to (from the auth middleware's principal; empty
without auth). The stores themselves count nothing.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from cavra_ingest import __version__
from cavra_ingest.core.errors import Problem
from cavra_ingest.http.auth import PRINCIPAL
from cavra_ingest.http.keys import SETTINGS_KEY, SINK_KEY

# Seconds: from a cache-hot read (~1 ms) to a request that waited out a long drain.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Records per transaction: one request alone up to the largest commit the settings allow.
BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2000, 5000, 10000)
UNMATCHED = "unmatched"


@dataclass
class Metrics:
    """The collectors of one app, registered in its own registry (tests build many apps in one process)."""

    registry: CollectorRegistry
    records: Counter
    requests: Counter
    request_seconds: Histogram
    shed: Counter
    batch_records: Histogram
    commit_seconds: Histogram
    store_errors: Counter
    queue_depth: Gauge
    queue_capacity: Gauge
    # Labelled children by their label values: `labels()` validates and converts its arguments on every
    # call, which costs more than the increment itself on the per-request path.
    _request_children: dict[tuple[str, str, int], tuple[Any, Any, Any]] = field(default_factory=dict)
    _record_children: dict[tuple[str, str], Any] = field(default_factory=dict)
    _routes: dict[Any, str] = field(default_factory=dict)

    @classmethod
    def create(cls, app: web.Application) -> Metrics:
        registry = CollectorRegistry(auto_describe=True)
        metrics = cls(
            registry=registry,
            records=Counter(
                "cavra_records",
                "Decision records by outcome: received, then created, duplicate, conflict or rejected",
                ["outcome", "tenant"],
                registry=registry,
            ),
            requests=Counter(
                "cavra_http_requests",
                "HTTP requests by route template, method and status",
                ["route", "method", "status"],
                registry=registry,
            ),  # fmt: skip
            request_seconds=Histogram(
                "cavra_http_request_duration_seconds",
                "Time from the request's arrival to its handler's return, by route template",
                ["route", "method"],
                buckets=DURATION_BUCKETS,
                registry=registry,
            ),
            shed=Counter(
                "cavra_http_shed_requests",
                "Requests answered 503 (queue full, store unavailable, stopping) or 429 (rate limited)",
                ["status"],
                registry=registry,
            ),
            batch_records=Histogram(
                "cavra_writer_batch_records",
                "Records per committed transaction",
                buckets=BATCH_BUCKETS,
                registry=registry,
            ),  # fmt: skip
            commit_seconds=Histogram(
                "cavra_writer_commit_duration_seconds",
                "Time the store took to write and commit one batch",
                buckets=DURATION_BUCKETS,
                registry=registry,
            ),
            store_errors=Counter(
                "cavra_store_errors", "Batch transactions that failed and were rolled back", registry=registry
            ),
            queue_depth=Gauge("cavra_queue_records", "Records waiting for the writer", registry=registry),
            queue_capacity=Gauge(
                "cavra_queue_capacity_records", "Records the queue holds before requests get 503", registry=registry
            ),
        )
        for status in ("429", "503"):
            metrics.shed.labels(status)  # present at zero, so rate() works from the first scrape
        # Read at scrape time: the writer exists only once the app has started.
        metrics.queue_depth.set_function(lambda: app[SINK_KEY].health().queued_records if SINK_KEY in app else 0)
        metrics.queue_capacity.set_function(lambda: app[SETTINGS_KEY].writer.queue_max_records)
        info = Info("cavra_build", "Version of the running server", registry=registry)
        store = app[SETTINGS_KEY].store.kind
        info.info({"version": __version__, "python": platform.python_version(), "store": store})
        return metrics

    def observe_request(self, request: web.Request, status: int, seconds: float) -> None:
        route = self.route_of(request)
        key = (route, request.method, status)
        children = self._request_children.get(key)
        if children is None:
            shed = self.shed.labels(str(status)) if status in (429, 503) else None
            children = (
                self.requests.labels(route, key[1], str(status)),
                self.request_seconds.labels(route, key[1]),
                shed,
            )
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)
        if children[2] is not None:
            children[2].inc()

    def route_of(self, request: web.Request) -> str:
        """`route_of`, remembered per resource (its template never changes)."""
        match_info = request.match_info
        resource = match_info.route.resource
        if resource is None or match_info.http_exception is not None:
            return UNMATCHED
        route = self._routes.get(resource)
        if route is None:
            route = self._routes[resource] = route_of(request)
        return route

    def _records(self, outcome: str, tenant: str) -> Any:
        child = self._record_children.get((outcome, tenant))
        if child is None:
            child = self._record_children[(outcome, tenant)] = self.records.labels(outcome, tenant)
        return child

    def observe_batch(self, records: int, seconds: float, failed: bool) -> None:
        """Writer observer: called once per transaction attempt."""
        if failed:
            self.store_errors.inc()
            return
        self.batch_records.observe(records)
        self.commit_seconds.observe(seconds)

    def count_records(self, request: web.Request, checked: Iterable[object], statuses: Iterable[str]) -> None:
        """Count a POST's records: every one received, the invalid ones rejected, the rest by store outcome."""
        principal = request.get(PRINCIPAL)
        # Bound tokens only: their tenants are as few as the tokens, so the label set stays bounded.
        tenant = (principal.tenant_id if principal is not None else None) or ""
        received = rejected = 0
        for item in checked:
            received += 1
            rejected += isinstance(item, Problem)
        self._records("received", tenant).inc(received)
        if rejected:
            self._records("rejected", tenant).inc(rejected)
        for status in statuses:
            self._records(status, tenant).inc()


def route_of(request: web.Request) -> str:
    """Name the route template that matched (`/decisions/{decision_id}`), never the raw path."""
    resource = request.match_info.route.resource
    if resource is None:
        return UNMATCHED
    info = resource.get_info()
    path = info.get("path") or info.get("formatter") or info.get("prefix")
    # A 404 matches no resource of ours; its path is the client's and must not become a label.
    return str(path) if path and request.match_info.http_exception is None else UNMATCHED


def now() -> float:
    return time.perf_counter()
