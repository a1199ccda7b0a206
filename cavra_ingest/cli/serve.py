"""`cavra-ingest serve`: check the settings, migrate the store, then serve the HTTP API until a signal."""

from __future__ import annotations

import asyncio
import errno
import sys

from cavra_ingest.cli.options import FAILED, USAGE
from cavra_ingest.http import serving
from cavra_ingest.settings import Settings

SHUTDOWN_MARGIN_S = 1.0


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
            shutdown_timeout=settings.writer.drain_deadline_s + SHUTDOWN_MARGIN_S,
            access_log=None,
        )
    except OSError as exc:
        if exc.errno not in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
            raise
        reason = {errno.EADDRINUSE: "address already in use", errno.EACCES: "permission denied"}.get(
            exc.errno, "address not available"
        )
        print(
            f"cavra-ingest: cannot listen on {settings.server.host}:{settings.server.port}: {reason}", file=sys.stderr
        )
        return FAILED
    return 0


def event_loop(settings: Settings) -> asyncio.AbstractEventLoop | None:
    """Return a uvloop loop when wanted and installed; None lets aiohttp make a default one."""
    if not settings.server.uvloop:
        return None
    try:
        import uvloop
    except ImportError:
        return None
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop
