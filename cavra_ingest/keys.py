"""Typed keys for what the app holds."""

from __future__ import annotations

from aiohttp import web

from .settings import Settings
from .sink import Sink
from .store import Store

SETTINGS_KEY = web.AppKey("settings", Settings)
STORE_KEY = web.AppKey("store", Store)
# The batch writer, seen by handlers only through the Sink interface.
SINK_KEY = web.AppKey("sink", Sink)
