"""Command line: `serve`, `migrate`, `config`, and the data lifecycle commands (`prune`, `backup`, `import`)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import errno
import logging
import sys
from collections.abc import Sequence
from typing import Any

from cavra_ingest import __version__
from cavra_ingest.http import logs, serving
from cavra_ingest.settings import Settings, SettingsError, unknown_variables
from cavra_ingest.store.migrate import MigrationError

SHUTDOWN_MARGIN_S = 1.0
# Exit codes: 1 the command failed, 2 it was called wrongly (argparse's own code for usage errors).
FAILED, USAGE = 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cavra-ingest", description="Durable store for CAVRA decisions.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="migrate the store, then serve the HTTP API")
    serve.add_argument("--host", help="address to bind (CAVRA_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (CAVRA_PORT, default 8080)")
    serve.add_argument("--db", dest="activity_db", help="SQLite file (CAVRA_ACTIVITY_DB)")
    serve.add_argument("--json-store", dest="activity_store", help="JSON store file (CAVRA_ACTIVITY_STORE)")
    serve.add_argument("--log-format", choices=["text", "json"], help="log lines (CAVRA_LOG_FORMAT, default text)")
    serve.add_argument(
        "--insecure-no-auth",
        action="store_true",
        default=None,
        help="serve a non-loopback address with no token (CAVRA_INSECURE_NO_AUTH); never in production",
    )
    migrate = commands.add_parser("migrate", help="apply pending migrations and exit")
    target = migrate.add_mutually_exclusive_group(required=True)
    target.add_argument("--sqlite", metavar="PATH", help="SQLite file to migrate")
    target.add_argument("--postgres", metavar="URL", help="PostgreSQL database to migrate")
    migrate.add_argument("--schema", default="public", help="PostgreSQL schema (default public)")
    send = commands.add_parser("send", help="post decisions from an NDJSON or JSON array file (- for stdin)")
    send.add_argument("file", help="NDJSON or a JSON array of decisions; - reads stdin")
    send.add_argument("--url", help="server (CAVRA_URL, default http://127.0.0.1:8080)")
    send.add_argument("--token", help="bearer token (CAVRA_TOKEN)")
    send.add_argument("--spool", metavar="PATH", help="SQLite spool: what is unsent survives a crash, resent next run")
    send.add_argument("--batch-size", type=int, default=500, help="records per request (default 500)")
    commands.add_parser("config", help="print the effective settings (secrets redacted) and exit")
    from cavra_ingest.cli.lifecycle import add_commands

    add_commands(commands)
    from cavra_ingest.cli.tokens import add_token_parser

    add_token_parser(commands)
    add_recount_parser(commands)
    add_audit_commands(commands)
    commands.add_parser("worker", help="JetStream mode: commit the log (CAVRA_BROKER_URL) to PostgreSQL, then ack")
    return parser


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
    if not settings.activity_db:
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
    if settings.store_kind == "postgres":
        count = asyncio.run(
            recount_postgres(
                settings.activity_db, settings.postgres_schema, session_id=args.session, batch_sessions=args.batch
            )
        )
    else:
        count = recount_sqlite(settings.store_path, session_id=args.session, batch_sessions=args.batch)
    print(f"recounted {count} session(s)")
    return 0


def store_flags(parser: argparse.ArgumentParser) -> None:
    """The store selection `migrate` takes, optional: CAVRA_ACTIVITY_DB when neither flag is given."""
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--sqlite", metavar="PATH", help="SQLite file")
    target.add_argument("--postgres", metavar="URL", help="PostgreSQL database")
    parser.add_argument("--schema", help="PostgreSQL schema (CAVRA_POSTGRES_SCHEMA, default public)")


def add_audit_commands(commands: Any) -> None:
    verify = commands.add_parser("verify", help="recompute the audit log from the stored records; exit 1 on tampering")
    store_flags(verify)
    verify.add_argument("--public-key", help="verifier key (or a file holding it); default: the signing key's")
    verify.add_argument(
        "--archive",
        action="append",
        metavar="FILE",
        help="a `prune --archive` file: its records must match their leaves",
    )
    evidence = commands.add_parser("evidence", help="export or check a session's evidence bundle")
    actions = evidence.add_subparsers(dest="action", required=True)
    export = actions.add_parser("export", help="write a session's records, proofs and checkpoint to a file")
    store_flags(export)
    export.add_argument("--session", required=True, help="session_id")
    export.add_argument("--out", required=True, help="bundle file to write")
    check = actions.add_parser("verify", help="check a bundle offline")
    check.add_argument("file")
    check.add_argument("--public-key", help="verifier key (or a file holding it) to check the bundle against")


def run_audit_command(args: argparse.Namespace) -> int:
    from cavra_ingest.cli import verify

    if args.command == "evidence" and args.action == "verify":
        return verify.run_evidence_verify(args.file, args.public_key)
    settings = Settings.from_env(activity_db=args.sqlite or args.postgres, postgres_schema=args.schema)
    if args.command == "verify":
        return asyncio.run(verify.run_verify(settings, args.public_key, args.archive))
    return asyncio.run(verify.run_export(settings, args.session, args.out))


async def migrate_store(settings: Settings) -> list[str]:
    """Apply pending migrations through the store's own migrate, as `serve` does at start."""
    from cavra_ingest.store import make_store

    return await make_store(settings).migrate()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log_format = getattr(args, "log_format", None)
    try:
        settings = Settings.from_env(log_format=log_format)
    except SettingsError as exc:
        logs.configure()
        return usage_error(exc)
    logs.configure(settings.log_format, settings.log_level)
    for warning in unknown_variables():
        logging.getLogger("cavra_ingest.settings").warning(warning)
    if args.command == "send":
        from cavra_ingest.cli.send import send

        return asyncio.run(send(args.file, args.url, args.token, args.spool, args.batch_size))
    if args.command == "recount":
        return run_recount(args)
    if args.command == "worker":
        from workers.consumer import main as run_worker

        return run_worker(settings)
    if args.command in ("verify", "evidence"):
        return run_audit_command(args)
    if args.command == "migrate":
        target = Settings(activity_db=args.sqlite or args.postgres, postgres_schema=args.schema)
        try:
            applied = asyncio.run(migrate_store(target))
        except MigrationError as exc:
            print(f"cavra-ingest: {exc}", file=sys.stderr)
            return FAILED
        print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}")
        return 0
    if args.command == "token":
        from cavra_ingest.cli.tokens import run_token_command

        return run_token_command(args)
    if args.command == "config":
        from cavra_ingest.cli.lifecycle import print_config

        print_config(settings)
        return 0
    if args.command != "serve":
        from cavra_ingest.cli.lifecycle import run_command

        return run_command(args, settings)
    overrides = {"host": args.host, "port": args.port, "activity_db": args.activity_db}
    overrides.update(activity_store=args.activity_store, insecure_no_auth=args.insecure_no_auth)
    try:
        settings = Settings.from_env(log_format=log_format, **overrides)
    except SettingsError as exc:
        return usage_error(exc)
    return serve(settings)


def usage_error(exc: SettingsError) -> int:
    for problem in exc.problems:
        print(f"cavra-ingest: {problem}", file=sys.stderr)
    return USAGE


def serve(settings: Settings) -> int:
    """Run the server until SIGTERM/SIGINT; a port that cannot be bound is one line, not a traceback."""
    from cavra_ingest.http.app import create_app
    from cavra_ingest.http.auth import startup_problem

    problem = asyncio.run(startup_problem(settings))
    if problem is not None:
        print(f"cavra-ingest: {problem}", file=sys.stderr)
        return USAGE
    try:
        # Like web.run_app, plus a connection cap and a header-read time limit (serving.py).
        serving.run(
            create_app(settings),
            settings,
            event_loop(settings),
            # The writer's drain deadline starts with shutdown; the margin lets its 503s reach their clients.
            shutdown_timeout=settings.drain_deadline_s + SHUTDOWN_MARGIN_S,
            access_log=None,
        )
    except OSError as exc:
        if exc.errno not in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
            raise
        reason = {errno.EADDRINUSE: "address already in use", errno.EACCES: "permission denied"}.get(
            exc.errno, "address not available"
        )
        print(f"cavra-ingest: cannot listen on {settings.host}:{settings.port}: {reason}", file=sys.stderr)
        return FAILED
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


def with_store(settings: Settings, args: argparse.Namespace) -> Settings:
    """Apply a command's store flags (as `migrate` takes them) over the environment's store selection."""
    chosen = args.sqlite or args.postgres
    if chosen or args.json_store:
        settings = dataclasses.replace(settings, activity_db=chosen, activity_store=args.json_store)
    if args.schema:
        settings = dataclasses.replace(settings, postgres_schema=args.schema)
    return settings
