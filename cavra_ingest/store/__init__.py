"""Stores behind one interface; `open_store` picks one as SPEC §4 says."""

from __future__ import annotations

from ..settings import Settings
from .base import ListQuery, Outcome, Page, Store, StoreUnavailable, WriteItem


def make_store(settings: Settings) -> Store:
    """Build (but do not open) the store the settings select."""
    if settings.store_kind == "json":
        from .jsonfile import JsonStore

        return JsonStore(settings.store_path)
    if settings.store_kind == "postgres":
        from .postgres import PostgresStore

        return PostgresStore(settings.activity_db or "", schema=settings.postgres_schema)
    from .sqlite import SqliteStore

    return SqliteStore(
        settings.store_path,
        synchronous=settings.sqlite_synchronous,
        busy_timeout_ms=settings.sqlite_busy_timeout_ms,
    )


__all__ = ["ListQuery", "Outcome", "Page", "Store", "StoreUnavailable", "WriteItem", "make_store"]
