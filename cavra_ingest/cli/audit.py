"""`cavra-ingest verify` and `evidence`: parsers and runners (the checks themselves are in verify.py)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from cavra_ingest.cli.options import store_flags
from cavra_ingest.settings import Settings


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
