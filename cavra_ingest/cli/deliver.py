"""`cavra-ingest deliver`: the sinks' delivery in a process of its own (what `serve` starts as its child).

It holds the sinks' leases, so any number of them may run beside servers; it stops on SIGTERM or SIGINT,
and when started by `serve` it dies with it (PR_SET_PDEATHSIG), so a kill -9 of the server is one of both.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import sys
from collections.abc import Mapping

from cavra_ingest.settings import SPECS, Settings

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1
STOP_WAIT_S = 5.0


async def deliver(settings: Settings) -> int:
    from aiohttp import web

    from cavra_ingest.http.keys import SETTINGS_KEY
    from cavra_ingest.http.sinkfilter import compiler
    from cavra_ingest.store import make_store
    from cavra_ingest.store.sinks import SinkTables
    from workers.delivery import Delivery

    if settings.store.kind not in ("sqlite", "postgres"):
        print("cavra-ingest: sinks need a SQL store (CAVRA_ACTIVITY_DB)", file=sys.stderr)
        return 2
    await make_store(settings).migrate()
    app = web.Application()  # only what the filter parser reads: the settings
    app[SETTINGS_KEY] = settings
    tables = SinkTables(settings)
    await tables.open()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    delivery = Delivery(tables, settings.sinks, compiler(app))
    delivery.start()
    log.info("delivering to sinks as %s", delivery.holder)
    try:
        await stop.wait()
    finally:
        await asyncio.wait_for(delivery.stop(), STOP_WAIT_S * 2)
        await tables.close()
    return 0


def run_deliver(settings: Settings) -> int:
    return asyncio.run(deliver(settings))


def child_environment(settings: Settings, environ: Mapping[str, str]) -> dict[str, str]:
    """The parent's effective settings as CAVRA_* variables (flags included), for its child."""
    env = {key: value for key, value in environ.items() if not key.startswith("CAVRA_")}
    for spec in SPECS:
        value = settings.value(spec)
        if value is None:
            continue
        env[spec.env] = ("1" if value else "0") if isinstance(value, bool) else str(value)
    env["CAVRA_SINK_DELIVERY"] = "inline"
    return env


def die_with_parent() -> None:
    """Run in the child before exec: SIGKILL it when the parent dies (Linux; elsewhere nothing)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:
        os._exit(0)  # the parent is gone already
