"""`cavra-ingest token create|list|revoke`: manage API tokens in the store `serve` would use."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from cavra_ingest.settings import Settings
from cavra_ingest.store.migrate import MigrationError
from cavra_ingest.store.tokens import SCOPES, Token, TokenError, new_token, token_store


def add_token_parser(commands: Any) -> None:
    """Add the `token` command and its subcommands to the CLI's parser."""
    token = commands.add_parser("token", help="create, list or revoke API tokens")
    actions = token.add_subparsers(dest="token_command", required=True)
    create = actions.add_parser("create", help="create a token; its secret is printed once, on the last line")
    create.add_argument("--scope", action="append", required=True, choices=SCOPES, help="repeat for several")
    create.add_argument("--tenant", help="bind the token to this tenant (reads and writes only its records)")
    create.add_argument("--workspace", help="bind the token to this workspace of its tenant")
    create.add_argument("--name", help="a label for `token list` (default: the token id)")
    create.add_argument("--expires-in", metavar="DURATION", help="e.g. 90d, 12h, 30m (default: never)")
    create.add_argument("--rate", type=float, metavar="N", help="cap ingest at N records per second")
    create.add_argument(
        "--daily-quota", type=int, metavar="N", help="cap the decisions it creates at N per UTC day (default: none)"
    )
    actions.add_parser("list", help="list tokens (never their secrets)")
    revoke = actions.add_parser("revoke", help="revoke a token by id; effective within a second")
    revoke.add_argument("id")
    for action in actions.choices.values():
        target = action.add_mutually_exclusive_group()
        target.add_argument("--sqlite", metavar="PATH", help="SQLite file (default: CAVRA_ACTIVITY_DB)")
        target.add_argument("--postgres", metavar="URL", help="PostgreSQL database (default: CAVRA_ACTIVITY_DB)")
        action.add_argument("--schema", help="PostgreSQL schema (CAVRA_POSTGRES_SCHEMA, default public)")


def _settings(args: argparse.Namespace) -> Settings:
    # As `serve` selects its store: flags, then CAVRA_ACTIVITY_DB, then CAVRA_ACTIVITY_STORE, then the default file.
    return Settings.from_env(activity_db=args.sqlite or args.postgres, postgres_schema=args.schema)


def _row(token: Token) -> list[str]:
    state = "revoked" if token.revoked_at else ""
    return [
        token.id,
        token.name,
        ",".join(token.scopes),
        token.tenant_id or "*",
        token.workspace_id or "*",
        token.created_at[:19],
        (token.expires_at or "never")[:19],
        (token.last_used_at or "never")[:19],
        f"{token.rate_per_s:g}/s" if token.rate_per_s else "",
        f"{token.daily_quota}/day" if token.daily_quota else "",
        state,
    ]


def _table(tokens: list[Token]) -> str:
    head = ["ID", "NAME", "SCOPES", "TENANT", "WORKSPACE", "CREATED", "EXPIRES", "LAST USED", "RATE", "QUOTA", "STATE"]
    rows = [head, *(_row(token) for token in tokens)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


async def _run(args: argparse.Namespace) -> str:
    from cavra_ingest.store import make_store

    settings = _settings(args)
    tokens = token_store(settings)
    if tokens is None:
        raise TokenError(
            "the JSON store keeps no tokens (it is for local pilots on loopback); "
            "use a SQLite or PostgreSQL store (CAVRA_ACTIVITY_DB) to require tokens"
        )
    await make_store(settings).migrate()  # migration 008 makes the table
    await tokens.open()
    try:
        if args.token_command == "create":
            token, secret = new_token(
                args.scope,
                name=args.name,
                tenant_id=args.tenant,
                workspace_id=args.workspace,
                expires_in=args.expires_in,
                rate_per_s=args.rate,
                daily_quota=args.daily_quota,
            )
            await tokens.create(token, secret)
            await _access_event(settings, "token-created", token.tenant_id, f"token {token.id} ({token.name})")
            bound = f"tenant {token.tenant_id}" if token.tenant_id else "every tenant"
            if token.workspace_id:
                bound += f", workspace {token.workspace_id}"
            if token.daily_quota:
                bound += f", at most {token.daily_quota} decisions per UTC day"
            return (
                f"created token {token.id} ({token.name}) with scopes {', '.join(token.scopes)} for {bound}, "
                f"expires {token.expires_at or 'never'}, in {settings.store.label}\n"
                "The secret below is shown only this once; store it in a secret manager.\n"
                f"{secret}"
            )
        if args.token_command == "list":
            return _table(await tokens.list())
        # The revocation is its tenant's access event (a tenant's sinks stream it), as the creation was.
        tenant = next((t.tenant_id for t in await tokens.list() if t.id == args.id), None)
        if not await tokens.revoke(args.id):
            raise TokenError(f"no active token {args.id!r}")
        await _access_event(settings, "token-revoked", tenant, f"token {args.id}")
        return f"revoked {args.id}; servers refuse it within a second"
    finally:
        await tokens.close()


async def _access_event(settings: Any, kind: str, tenant: str | None, detail: str) -> None:
    """Keep the token's creation or revocation among the access events (GET /access-events, migration 022)."""
    import getpass

    from cavra_ingest.store.signin import AccessEvent, signin_store

    store = signin_store(settings)
    if store is None:
        return
    await store.open()
    try:
        try:
            who = getpass.getuser()
        except (KeyError, OSError):  # no user name in some containers
            who = "unknown"
        await store.record(AccessEvent(kind, "ok", sub=f"cli:{who}", remote="cli", tenant_id=tenant, detail=detail))
    finally:
        await store.close()


def run_token_command(args: argparse.Namespace) -> int:
    """Run `token create|list|revoke` and print its output; 1 with a message on failure."""
    try:
        print(asyncio.run(_run(args)))
    except (TokenError, MigrationError, ValueError) as exc:
        print(f"cavra-ingest: {exc}", file=sys.stderr)
        return 1
    return 0
