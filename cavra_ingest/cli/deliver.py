"""`cavra-ingest deliver`: the sinks' delivery in a process of its own (what `serve` starts as its child).

It holds the sinks' leases, so any number of them may run beside servers; it stops on SIGTERM or SIGINT,
and when started by `serve` it dies with it (PR_SET_PDEATHSIG), so a kill -9 of the server is one of both.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from cavra_ingest.settings import Settings

log = logging.getLogger(__name__)
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
