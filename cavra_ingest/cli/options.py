"""What several commands share: exit codes and the store flags."""

from __future__ import annotations

import argparse

from cavra_ingest.settings import Settings

# Exit codes: 1 the command failed, 2 it was called wrongly (argparse's own code for usage errors).
FAILED, USAGE = 1, 2


def store_flags(parser: argparse.ArgumentParser) -> None:
    """The store selection `migrate` takes, optional: CAVRA_ACTIVITY_DB when neither flag is given."""
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--sqlite", metavar="PATH", help="SQLite file")
    target.add_argument("--postgres", metavar="URL", help="PostgreSQL database")
    parser.add_argument("--schema", help="PostgreSQL schema (CAVRA_POSTGRES_SCHEMA, default public)")


def with_store(settings: Settings, args: argparse.Namespace) -> Settings:
    """Apply a command's store flags (as `migrate` takes them) over the environment's store selection."""
    chosen = args.sqlite or args.postgres
    if chosen or args.json_store:
        settings = settings.replace(activity_db=chosen, activity_store=args.json_store)
    if args.schema:
        settings = settings.replace(postgres_schema=args.schema)
    return settings


def store_arguments(parser: argparse.ArgumentParser) -> None:
    """The store flags of `migrate`; without one, the store comes from CAVRA_ACTIVITY_DB / CAVRA_ACTIVITY_STORE."""
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--sqlite", metavar="PATH", help="SQLite file")
    target.add_argument("--postgres", metavar="URL", help="PostgreSQL database")
    target.add_argument("--json-store", metavar="PATH", help="JSON store file")
    parser.add_argument("--schema", help="PostgreSQL schema (CAVRA_POSTGRES_SCHEMA, default public)")
