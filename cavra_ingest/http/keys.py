"""Typed keys for what the app holds."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from cavra_ingest.core.sink import CountsHealth, SearchHealth, Sink
from cavra_ingest.settings import Settings
from cavra_ingest.store import Store

SETTINGS_KEY = web.AppKey("settings", Settings)
STORE_KEY = web.AppKey("store", Store)
# The batch writer, seen by handlers only through the Sink interface.
SINK_KEY = web.AppKey("sink", Sink)
# Reports the background search indexer's progress for /healthz (absent when it does not run).
SEARCH_HEALTH_KEY: web.AppKey[Callable[[], SearchHealth]] = web.AppKey("search_health")
COUNTS_HEALTH_KEY: web.AppKey[Callable[[], CountsHealth]] = web.AppKey("counts_health")
