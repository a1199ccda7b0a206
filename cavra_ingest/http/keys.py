"""Typed keys for everything the app holds: one place, so a handler finds what it may read."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web

from cavra_ingest.core.sink import CountsHealth, SearchHealth, Sink
from cavra_ingest.settings import Settings
from cavra_ingest.store import Store

if TYPE_CHECKING:
    # The modules that define these types read their settings through this one: typed here, imported lazily.
    from cavra_ingest.auditlog.log import AuditLog
    from cavra_ingest.http.auth import Guard
    from cavra_ingest.http.guards import BodyBudget, DiskFloor
    from cavra_ingest.http.metrics import Metrics
    from cavra_ingest.http.quota import Quotas
    from cavra_ingest.http.signin import SignIn
    from cavra_ingest.runtime import Runtime
    from cavra_ingest.store.signin import Signins
    from cavra_ingest.store.sinks import SinkTables
    from workers.childproc import Child
    from workers.delivery import Delivery

SETTINGS_KEY = web.AppKey("settings", Settings)
STORE_KEY = web.AppKey("store", Store)
# The batch writer, seen by handlers only through the Sink interface.
SINK_KEY = web.AppKey("sink", Sink)
# Reports the background search indexer's progress for /healthz (absent when it does not run).
SEARCH_HEALTH_KEY: web.AppKey[Callable[[], SearchHealth]] = web.AppKey("search_health")
COUNTS_HEALTH_KEY: web.AppKey[Callable[[], CountsHealth]] = web.AppKey("counts_health")
RUNTIME_KEY: web.AppKey[Runtime] = web.AppKey("runtime")
# Absent on the JSON store and with CAVRA_AUDIT_LOG=0.
AUDIT_KEY: web.AppKey[AuditLog] = web.AppKey("audit_log")
METRICS_KEY: web.AppKey[Metrics] = web.AppKey("metrics")
GUARD_KEY: web.AppKey[Guard] = web.AppKey("guard")
SIGNIN_KEY: web.AppKey[SignIn] = web.AppKey("signin")
ACCESS_KEY: web.AppKey[Signins] = web.AppKey("access_events")
QUOTAS_KEY: web.AppKey[Quotas] = web.AppKey("quotas")
HOSTS_KEY: web.AppKey[frozenset[str]] = web.AppKey("allowed_hosts")
BUDGET_KEY: web.AppKey[BodyBudget] = web.AppKey("body_budget")
DISK_KEY: web.AppKey[DiskFloor] = web.AppKey("disk_floor")
ORIGINS_KEY: web.AppKey[frozenset[str]] = web.AppKey("cors_origins")
# (transactions, records) when the stop was asked for: set during shutdown, when the app's keys are frozen.
DRAIN_FROM_KEY: web.AppKey[list[int]] = web.AppKey("drain_from")
# The sinks' tables (SQL stores only) and this process's delivery to them (absent with CAVRA_SINKS=0).
SINK_TABLES_KEY: web.AppKey[SinkTables] = web.AppKey("sink_tables")
DELIVERY_KEY: web.AppKey[Delivery] = web.AppKey("delivery")
# `serve`'s delivery child (CAVRA_SINK_DELIVERY=process).
CHILD_KEY: web.AppKey[Child] = web.AppKey("sink_child")
