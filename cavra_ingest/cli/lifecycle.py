"""`cavra-ingest config`, `migrate`'s runner, `recount`, `prune`, `backup` and `import`: parsers and runners."""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from pathlib import Path
from typing import Any

from cavra_ingest.cli.options import FAILED, USAGE, store_arguments
from cavra_ingest.core.progress import Progress
from cavra_ingest.settings import SPECS, Settings, redact_url
from cavra_ingest.store.migrate import MigrationError

# Field names that hold a secret whole; URLs elsewhere are redacted by pattern.
SECRET_FIELD = re.compile(r"token|secret|password|key", re.IGNORECASE)


def redact(name: str, value: Any) -> str:
    """Show a setting's value without a password or token in it."""
    if value is not None and value != "" and SECRET_FIELD.search(name):
        return "***"
    return redact_url("" if value is None else str(value))


def print_config(settings: Settings) -> None:
    """Print every setting by group as `CAVRA_NAME=value` (a changed one says its default), then the store."""
    group = None
    for spec in SPECS:
        if spec.group != group:
            group = spec.group
            print(f"{'' if spec is SPECS[0] else chr(10)}# {group}")
        value = settings.value(spec)
        line = f"{spec.env}={redact(spec.key, value)}"
        if value != spec.default:
            line += f"  # default: {'unset' if spec.default in (None, '') else spec.default}"
        print(line)
    print(f"\n# store: {settings.store.kind} at {redact('store', settings.store.label)}")


def add_commands(commands: Any) -> None:
    prune = commands.add_parser("prune", help="delete decisions older than a date, in bounded batches")
    prune.add_argument("--before", required=True, metavar="DATE", help="2026-01-31 or an RFC 3339 time (UTC)")
    prune.add_argument("--archive", type=Path, metavar="FILE.ndjson.gz", help="append what is deleted here first")
    prune.add_argument("--dry-run", action="store_true", help="count what would be deleted; change nothing")
    prune.add_argument("--batch-size", type=int, default=1000, help="decisions per transaction (default 1000)")
    store_arguments(prune)
    backup = commands.add_parser("backup", help="write a consistent, verified copy of a live SQLite store")
    backup.add_argument("file", type=Path, metavar="FILE", help="new file for the copy")
    store_arguments(backup)
    importer = commands.add_parser("import", help="import a CAVRA JSON/SQLite store or an NDJSON/CSV export")
    importer.add_argument("path", type=Path, metavar="PATH")
    store_arguments(importer)


def run_command(args: argparse.Namespace, settings: Settings) -> int:
    """Run a lifecycle command; expected failures are one line on stderr."""
    from cavra_ingest.cli.options import with_store

    settings = with_store(settings, args)
    try:
        if args.command == "prune":
            return asyncio.run(run_prune(args, settings))
        if args.command == "backup":
            return run_backup(args, settings)
        return asyncio.run(run_import(args, settings))
    except (ValueError, FileNotFoundError, OSError) as exc:
        print(f"cavra-ingest {args.command}: {exc}", file=sys.stderr)
        return FAILED


async def run_prune(args: argparse.Namespace, settings: Settings) -> int:
    from cavra_ingest.store.prune import connect, cutoff, prune

    if args.batch_size < 1:
        print("cavra-ingest prune: --batch-size: expected a positive integer", file=sys.stderr)
        return USAGE
    before = cutoff(args.before)
    conn = await connect(settings)
    progress = Progress("prune")
    try:
        report = await prune(
            conn, before, batch_size=args.batch_size, archive=args.archive, dry_run=args.dry_run, progress=progress
        )
    finally:
        await conn.close()
    if args.dry_run:
        print(f"dry run: {report.matched} decision(s) before {before} would be deleted")
        return 0
    progress.close()
    print(
        f"deleted {report.decisions_removed} decision(s) before {before} in {report.batches} batch(es); "
        f"{report.sessions_recounted} session(s) recounted, {report.sessions_removed} removed"
        + (f"; archived to {report.archive}" if report.archive else "")
    )
    return 0


def run_backup(args: argparse.Namespace, settings: Settings) -> int:
    from cavra_ingest.store.backup import BackupError, backup

    if settings.store.kind != "sqlite":
        print(
            f"cavra-ingest backup: the {settings.store.kind} store is not a SQLite file "
            "(PostgreSQL: use pg_dump; JSON: copy the file while the server is stopped)",
            file=sys.stderr,
        )
        return USAGE
    progress = Progress("backup (pages)")
    try:
        pages = backup(settings.store.path, args.file, progress)
    except BackupError as exc:
        print(f"cavra-ingest backup: {exc}", file=sys.stderr)
        return FAILED
    progress.close()
    print(f"backed up {settings.store.path} to {args.file} ({pages} pages, integrity_check ok)")
    return 0


async def run_import(args: argparse.Namespace, settings: Settings) -> int:
    from cavra_ingest.cli.importer import import_path

    if not args.path.is_file():
        print(f"cavra-ingest import: no file at {args.path}", file=sys.stderr)
        return USAGE
    progress = Progress("import")
    report = await import_path(args.path, settings, progress)
    progress.close()
    print(report.summary())
    return 0


def add_recount_parser(commands: Any) -> None:
    recount = commands.add_parser(
        "recount", help="rebuild session summaries from stored decisions (after CAVRA wrote into the store)"
    )
    target = recount.add_mutually_exclusive_group()
    target.add_argument("--sqlite", metavar="PATH", help="SQLite file (default: CAVRA_ACTIVITY_DB)")
    target.add_argument("--postgres", metavar="URL", help="PostgreSQL database (default: CAVRA_ACTIVITY_DB)")
    recount.add_argument("--schema", help="PostgreSQL schema (CAVRA_POSTGRES_SCHEMA, default public)")
    recount.add_argument("--session", metavar="ID", help="recount this session only")
    recount.add_argument("--batch", type=int, default=200, metavar="N", help="sessions per transaction (default 200)")


def run_recount(args: argparse.Namespace) -> int:
    """Migrate the chosen SQL store, then rebuild its summaries from stored decisions."""
    from cavra_ingest.store.recount import recount_postgres, recount_sqlite

    settings = Settings.from_env(activity_db=args.sqlite or args.postgres, postgres_schema=args.schema)
    if not settings.store.activity_db:
        print("cavra-ingest recount: give --sqlite PATH, --postgres URL or CAVRA_ACTIVITY_DB", file=sys.stderr)
        return 2
    if args.batch < 1:
        print("cavra-ingest recount: --batch must be at least 1", file=sys.stderr)
        return 2
    try:
        asyncio.run(migrate_store(settings))
    except MigrationError as exc:
        print(f"cavra-ingest: {exc}", file=sys.stderr)
        return 1
    if settings.store.kind == "postgres":
        count = asyncio.run(
            recount_postgres(
                settings.store.activity_db,
                settings.store.postgres_schema,
                session_id=args.session,
                batch_sessions=args.batch,
            )
        )
    else:
        count = recount_sqlite(settings.store.path, session_id=args.session, batch_sessions=args.batch)
    print(f"recounted {count} session(s)")
    return 0


async def migrate_store(settings: Settings) -> list[str]:
    """Apply pending migrations through the store's own migrate, as `serve` does at start."""
    from cavra_ingest.store import make_store

    return await make_store(settings).migrate()
