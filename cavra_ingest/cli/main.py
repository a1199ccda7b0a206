"""Command line: `serve`, `migrate`, `config`, and the data lifecycle commands (`prune`, `backup`, `import`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from cavra_ingest import __version__
from cavra_ingest.cli import audit, lifecycle
from cavra_ingest.cli.options import FAILED, USAGE
from cavra_ingest.http import logs
from cavra_ingest.settings import Settings, SettingsError, unknown_variables
from cavra_ingest.store.migrate import MigrationError


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
    config = commands.add_parser("config", help="print the effective settings (secrets redacted) and exit")
    config.add_argument("--markdown", action="store_true", help="print docs/configuration.md: every setting, by group")
    from cavra_ingest.cli.lifecycle import add_commands

    add_commands(commands)
    from cavra_ingest.cli.tokens import add_token_parser

    add_token_parser(commands)
    from cavra_ingest.cli.sinks import add_sinks_parser

    add_sinks_parser(commands)
    commands.add_parser("deliver", help="deliver to the sinks in a process of its own (serve starts one)")
    lifecycle.add_recount_parser(commands)
    audit.add_audit_commands(commands)
    commands.add_parser("worker", help="JetStream mode: commit the log (CAVRA_BROKER_URL) to PostgreSQL, then ack")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log_format = getattr(args, "log_format", None)
    try:
        settings = Settings.from_env(log_format=log_format)
    except SettingsError as exc:
        logs.configure()
        return usage_error(exc)
    logs.configure(settings.server.log_format, settings.server.log_level)
    for warning in unknown_variables():
        logging.getLogger("cavra_ingest.settings").warning(warning)
    if args.command == "send":
        from cavra_ingest.cli.send import send

        return asyncio.run(send(args.file, args.url, args.token, args.spool, args.batch_size))
    if args.command == "recount":
        return lifecycle.run_recount(args)
    if args.command == "worker":
        from workers.consumer import main as run_worker

        return run_worker(settings)
    if args.command in ("verify", "evidence"):
        return audit.run_audit_command(args)
    if args.command == "migrate":
        target = Settings.of(activity_db=args.sqlite or args.postgres, postgres_schema=args.schema)
        try:
            applied = asyncio.run(lifecycle.migrate_store(target))
        except MigrationError as exc:
            print(f"cavra-ingest: {exc}", file=sys.stderr)
            return FAILED
        print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}")
        return 0
    if args.command == "deliver":
        from cavra_ingest.cli.deliver import run_deliver

        return run_deliver(settings)
    if args.command == "sinks":
        from cavra_ingest.cli.sinks import run_sinks_command

        return run_sinks_command(args)
    if args.command == "token":
        from cavra_ingest.cli.tokens import run_token_command

        return run_token_command(args)
    if args.command == "config":
        from cavra_ingest.cli.lifecycle import print_config
        from cavra_ingest.settings.reference import markdown

        print(markdown(), end="") if args.markdown else print_config(settings)
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
    from cavra_ingest.cli.serve import serve

    return serve(settings)


def usage_error(exc: SettingsError) -> int:
    for problem in exc.problems:
        print(f"cavra-ingest: {problem}", file=sys.stderr)
    return USAGE
