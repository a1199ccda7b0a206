"""Command line: `cavra-ingest serve` and `cavra-ingest migrate`."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from aiohttp import web

from .migrate import MigrationError, apply_migrations
from .settings import Settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cavra-ingest", description="Durable store for CAVRA decisions.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="migrate the store, then serve the HTTP API")
    serve.add_argument("--host", help="address to bind (CAVRA_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (CAVRA_PORT, default 8080)")
    serve.add_argument("--db", dest="activity_db", help="SQLite file (CAVRA_ACTIVITY_DB)")
    serve.add_argument("--json-store", dest="activity_store", help="JSON store file (CAVRA_ACTIVITY_STORE)")
    migrate = commands.add_parser("migrate", help="apply pending migrations and exit")
    migrate.add_argument("--sqlite", required=True, metavar="PATH", help="SQLite file to migrate")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args.command == "migrate":
        try:
            applied = apply_migrations(args.sqlite)
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
        "serving on %s:%d with %s store at %s", settings.host, settings.port, settings.store_kind, settings.store_path
    )
    # shutdown_timeout bounds how long in-flight requests may take once SIGTERM arrives.
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        shutdown_timeout=settings.drain_deadline_s,
        access_log=None,
        print=None,
    )
    return 0
