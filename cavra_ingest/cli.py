"""Command line: `cavra-ingest serve` and `cavra-ingest migrate`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from . import serving
from .migrate import MigrationError
from .settings import Settings

SHUTDOWN_MARGIN_S = 1.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cavra-ingest", description="Durable store for CAVRA decisions.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="migrate the store, then serve the HTTP API")
    serve.add_argument("--host", help="address to bind (CAVRA_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (CAVRA_PORT, default 8080)")
    serve.add_argument("--db", dest="activity_db", help="SQLite file (CAVRA_ACTIVITY_DB)")
    serve.add_argument("--json-store", dest="activity_store", help="JSON store file (CAVRA_ACTIVITY_STORE)")
    migrate = commands.add_parser("migrate", help="apply pending migrations and exit")
    target = migrate.add_mutually_exclusive_group(required=True)
    target.add_argument("--sqlite", metavar="PATH", help="SQLite file to migrate")
    target.add_argument("--postgres", metavar="URL", help="PostgreSQL database to migrate")
    migrate.add_argument("--schema", default="public", help="PostgreSQL schema (default public)")
    return parser


async def migrate_store(settings: Settings) -> list[str]:
    """Apply pending migrations through the store's own migrate, as `serve` does at start."""
    from .store import make_store

    return await make_store(settings).migrate()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args.command == "migrate":
        target = Settings(activity_db=args.sqlite or args.postgres, postgres_schema=args.schema)
        try:
            applied = asyncio.run(migrate_store(target))
        except MigrationError as exc:
            print(f"cavra-ingest: {exc}", file=sys.stderr)
            return 1
        print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}")
        return 0
    from .app import create_app

    settings = Settings.from_env(
        host=args.host, port=args.port, activity_db=args.activity_db, activity_store=args.activity_store
    )
    logging.getLogger(__name__).info(
        "serving on %s:%d with the %s store (%s)",
        settings.host,
        settings.port,
        settings.store_kind,
        settings.store_label,
    )
    # Like web.run_app, plus a connection cap and a header-read time limit (serving.py).
    serving.run(
        create_app(settings),
        settings,
        event_loop(settings),
        # The writer's drain deadline starts with shutdown; the margin lets its 503s reach their clients.
        shutdown_timeout=settings.drain_deadline_s + SHUTDOWN_MARGIN_S,
        access_log=None,
    )
    return 0


def event_loop(settings: Settings) -> asyncio.AbstractEventLoop | None:
    """Return a uvloop loop when wanted and installed; None lets aiohttp make a default one."""
    if not settings.uvloop:
        return None
    try:
        import uvloop
    except ImportError:
        return None
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop
