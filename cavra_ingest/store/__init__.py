"""Stores behind one interface, chosen by the scheme of the settings' store URL (SPEC §4 precedence).

`base` declares the protocol and its optional features; `sqlite/` and `postgres/` are packages, `jsonfile` one module.

Imports: core, settings, auditlog. Never http: a store knows nothing of requests.
"""

from __future__ import annotations

import importlib

from cavra_ingest.settings import Settings
from cavra_ingest.store.base import ListQuery, Page, Store, StoreUnavailable

# Store URL scheme → backend class; each is built by its `from_settings`. A new backend is one module and one line.
BACKENDS = {
    "sqlite": "cavra_ingest.store.sqlite.store:SqliteStore",
    "json": "cavra_ingest.store.jsonfile:JsonStore",
    "postgres": "cavra_ingest.store.postgres.store:PostgresStore",
}


def make_store(settings: Settings) -> Store:
    """Build (but do not open) the store the settings select."""
    module_name, _, class_name = BACKENDS[settings.store.kind].partition(":")
    backend = getattr(importlib.import_module(module_name), class_name)
    store: Store = backend.from_settings(settings)
    return store


__all__ = ["ListQuery", "Page", "Store", "StoreUnavailable", "make_store"]
