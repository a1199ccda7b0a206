"""`cavra-ingest sinks add|list|show|pause|resume|remove|replay`: manage sinks in the store `serve` uses.

The checks are the routes' own (core/sinks.py, and the filter through the `GET /decisions` parser); a
running server picks the change up within a second.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import msgspec

from cavra_ingest.core.errors import ApiError
from cavra_ingest.core.models import now_text
from cavra_ingest.core.sinks import (
    KINDS,
    SinkDef,
    SinkError,
    check_events,
    check_filter_streams,
    check_kind,
    check_name,
    check_secret,
    check_target,
)
from cavra_ingest.settings import Settings
from cavra_ingest.store.migrate import MigrationError


class SinkCommandError(Exception):
    """A sink command that cannot be carried out; the message says why."""


def add_sinks_parser(commands: Any) -> None:
    sinks = commands.add_parser(
        "sinks", help="stream decisions to SIEMs: add, list, show, pause, resume, remove, replay"
    )
    actions = sinks.add_subparsers(dest="sinks_command", required=True)
    add = actions.add_parser("add", help="add a sink; a webhook's signing secret is printed once when made")
    add.add_argument("--name", required=True)
    add.add_argument("--kind", required=True, choices=KINDS)
    add.add_argument("--target", required=True, help="URL, tcp://host:port or tls://host:port, or a folder")
    add.add_argument("--filter", default="", help="a GET /decisions query string, e.g. decision=block")
    add.add_argument("--secret-file", help="file holding the webhook secret (whsec_...) or the HEC token")
    add.add_argument("--tenant", help="bind the sink to this tenant (it receives only that tenant's records)")
    add.add_argument("--start", choices=("beginning", "now"), default="beginning")
    add.add_argument("--events", default="decisions",
                     help="the streams it follows, comma-separated: decisions, access (sign-ins, tokens)")  # fmt: skip
    actions.add_parser("list", help="list sinks with their progress (never their secrets)")
    verbs = {
        "show": "one sink as JSON",
        "pause": "stop delivering (the cursor stays)",
        "resume": "deliver again from the cursor",
        "remove": "remove it, its cursor and dead letters",
        "replay": "send its dead letters once more",
    }
    for verb, text in verbs.items():
        actions.add_parser(verb, help=text).add_argument("name")
    for action in actions.choices.values():
        target = action.add_mutually_exclusive_group()
        target.add_argument("--sqlite", metavar="PATH", help="SQLite file (default: CAVRA_ACTIVITY_DB)")
        target.add_argument("--postgres", metavar="URL", help="PostgreSQL database (default: CAVRA_ACTIVITY_DB)")
        action.add_argument("--schema", help="PostgreSQL schema (CAVRA_POSTGRES_SCHEMA, default public)")


async def _check_filter(settings: Settings, text: str, tenant: str | None) -> str:
    from aiohttp import web

    from cavra_ingest.http.keys import SETTINGS_KEY, STORE_KEY
    from cavra_ingest.http.sinkfilter import checked_query
    from cavra_ingest.store import make_store

    store = make_store(settings)
    await store.open()
    try:
        app = web.Application()
        app[SETTINGS_KEY], app[STORE_KEY] = settings, store
        await checked_query(app, text.lstrip("?"), tenant)
    except ApiError as exc:
        raise SinkCommandError(f"filter: {exc.detail}") from None
    finally:
        await store.close()
    return text.lstrip("?")


def _table(rows: list[dict[str, Any]]) -> str:
    head = ["NAME", "KIND", "STATE", "TENANT", "EVENTS", "DELIVERED", "LAG", "DEAD", "TARGET", "FILTER"]
    cells = [head] + [[r["name"], r["kind"], r["state"], r["tenant_id"] or "*", ",".join(r["events"]),
                       str(r["delivered"]),
                       f"{r['lag_records']} ({r['lag_seconds']:g} s)", str(r["dead_letters"]), r["target"],
                       r["filter"]] for r in rows]  # fmt: skip
    widths = [max(len(row[i]) for row in cells) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells)


async def _run(args: argparse.Namespace) -> str:
    from cavra_ingest.http.routes.sinks import status_of
    from cavra_ingest.store import make_store
    from cavra_ingest.store.sinks import SinkTables
    from workers.delivery import replay

    settings = Settings.from_env(activity_db=args.sqlite or args.postgres, postgres_schema=args.schema)
    if settings.store.kind not in ("sqlite", "postgres"):
        raise SinkCommandError("the JSON store keeps no sinks; use SQLite or PostgreSQL (CAVRA_ACTIVITY_DB)")
    await make_store(settings).migrate()  # migration 021 makes the tables
    if args.sinks_command == "add":
        try:
            name, kind = check_name(args.name), check_kind(args.kind)
            target = check_target(kind, args.target)
            given = open(args.secret_file).read().strip() if args.secret_file else None
            secret = check_secret(kind, given)
            events = check_events([e.strip() for e in args.events.split(",") if e.strip()])
            check_filter_streams(args.filter.lstrip("?"), events)
        except SinkError as exc:
            raise SinkCommandError(f"{exc.field}: {exc}") from None
        from cavra_ingest.core.sinks import missing_package

        if (missing := missing_package(kind)) is not None:
            raise SinkCommandError(
                f"a {kind} sink needs the {missing!r} package: pip install 'cavra-ingest[streaming]'"
            )
        text = await _check_filter(settings, args.filter, args.tenant)
    tables = SinkTables(settings)
    await tables.open()
    try:
        if args.sinks_command == "add":
            sink = SinkDef(name, kind, target, now_text(), text, "active", args.tenant, secret is not None, events)
            start = await tables.end() if args.start == "now" else (0, 0)
            access_start = await tables.access_end() if args.start == "now" else (0, 0)
            if not await tables.create(sink, secret, start, access_start):
                raise SinkCommandError(f"a sink named {name!r} exists")
            shown = f"added sink {name} ({kind} to {target})"
            if secret is not None and given is None:
                shown += "\nIts signing secret below is shown only this once; give it to the receiver.\n" + secret
            return shown
        if args.sinks_command == "list":
            return _table([msgspec.to_builtins(await status_of(tables, s)) for s in await tables.all()])
        found = await tables.get(args.name)
        if found is None:
            raise SinkCommandError(f"no sink {args.name!r}")
        if args.sinks_command == "show":
            return msgspec.json.format(msgspec.json.encode(await status_of(tables, found))).decode()
        if args.sinks_command in ("pause", "resume"):
            state = "paused" if args.sinks_command == "pause" else "active"
            await tables.update(found.name, found.filter, state, found.events)
            return f"{args.sinks_command}d {found.name}"
        if args.sinks_command == "remove":
            await tables.remove(found.name)
            return f"removed {found.name}"
        delivered, left = await replay(tables, found, settings.sinks)
        return f"replayed {delivered} dead letters of {found.name}; {left} left"
    finally:
        await tables.close()


def run_sinks_command(args: argparse.Namespace) -> int:
    try:
        print(asyncio.run(_run(args)))
    except (SinkCommandError, MigrationError, ValueError, OSError) as exc:
        print(f"cavra-ingest: {exc}", file=sys.stderr)
        return 1
    return 0
