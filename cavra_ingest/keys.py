"""Typed keys for what the app holds."""

from __future__ import annotations

from aiohttp import web

from workers.writer import BatchWriter

from .settings import Settings
from .store import Store

SETTINGS_KEY = web.AppKey("settings", Settings)
STORE_KEY = web.AppKey("store", Store)
WRITER_KEY = web.AppKey("writer", BatchWriter)
