"""Serve the app with the connection limits `web.run_app` has no setting for: a cap on open connections
(kept below the file-descriptor limit) and a time limit on receiving a new connection's request headers."""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from typing import Any, cast

from aiohttp import web

from cavra_ingest.settings import Settings

log = logging.getLogger(__name__)
# Connections asyncio accepts in one burst (the listen backlog): each takes a descriptor before it can be
# refused, so the cap leaves room for a burst, for refusals still lingering, and for the store and logs.
BACKLOG = 64
LOG_EVERY_S = 10.0


def _raw_reply(status: str, detail: str, code: str) -> bytes:
    body = f'{{"detail":"{detail}","status":{status[:3]},"error":"{code}"}}'.encode()
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Retry-After: 1\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


REFUSED = _raw_reply("503 Service Unavailable", "too many open connections; retry later", "unavailable")
HEADERS_LATE = _raw_reply("408 Request Timeout", "request headers were not received in time", "request_timeout")


class RateLimitedLog:
    """One warning line per interval for a condition that may repeat thousands of times a second."""

    def __init__(self, message: str, every_s: float = LOG_EVERY_S) -> None:
        self.message = message
        self.every_s = every_s
        self.last = -float("inf")
        self.suppressed = 0

    def warn(self, *args: Any) -> None:
        now = time.monotonic()
        if now - self.last < self.every_s:
            self.suppressed += 1
            return
        log.warning(self.message + " (%d more since the last line)", *args, self.suppressed)
        self.last, self.suppressed = now, 0


# How long a refused connection is kept for its client to read the 503 before the descriptor is freed,
# and how many may linger at once (beyond that they are closed at once: descriptors come first).
REFUSED_LINGER_S = 0.5
MAX_LINGERING = 16
FD_RESERVE = BACKLOG + MAX_LINGERING + 48


class Refused(asyncio.Protocol):
    """A connection over the cap: told 503 at once, then closed; what it sends is discarded."""

    def __init__(self, site: GuardedSite) -> None:
        self.site = site
        self.closer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # No isinstance check: uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        transport = self.transport
        transport.write(REFUSED)
        if self.site.lingering >= MAX_LINGERING:
            transport.close()
            return
        # Closing at once with unread request bytes would reset the connection before the 503 is read:
        # half-close, and free the descriptor when the client closes or after a short linger.
        self.site.lingering += 1
        transport.write_eof()
        self.closer = asyncio.get_running_loop().call_later(REFUSED_LINGER_S, transport.close)

    def eof_received(self) -> bool:
        self.transport.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closer is not None:
            self.closer.cancel()
            self.site.lingering -= 1


def connection_cap(settings: Settings) -> int:
    """Return the configured cap, lowered below the process's soft file-descriptor limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return settings.server.max_connections
    return max(1, min(settings.server.max_connections, soft - FD_RESERVE))


class Counted(asyncio.Protocol):
    """Forward a connection to aiohttp's handler, counting it from accept to close.

    aiohttp's own list of connections fills in only when a connection is made, a loop step after the
    factory ran, so a burst of accepts would all see room under the cap.
    """

    def __init__(self, inner: web.RequestHandler, site: GuardedSite) -> None:
        self.inner = inner
        self.site = site
        site.open += 1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> None:
        self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.site.open -= 1
        self.inner.connection_lost(exc)


class GuardedSite(web.TCPSite):
    """A TCP site whose protocol factory enforces the connection cap and the header-read time limit."""

    def __init__(self, runner: web.AppRunner, settings: Settings, **kwargs: Any) -> None:
        super().__init__(runner, settings.server.host, settings.server.port, backlog=BACKLOG, **kwargs)
        self.cap = connection_cap(settings)
        self.header_timeout_s = settings.server.header_read_timeout_s
        self.over_cap = RateLimitedLog("connection cap of %d reached: new connections get 503")
        self.late = RateLimitedLog("closed %d connection(s) that sent no complete request headers in time")
        self.late_count = 0
        self.lingering = 0
        self.open = 0

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._protocol, self._host, self._port, backlog=self._backlog, reuse_address=self._reuse_address
        )

    def _protocol(self) -> asyncio.BaseProtocol:
        server = self._runner.server
        assert server is not None
        if self.open >= self.cap:
            self.over_cap.warn(self.cap)
            return Refused(self)
        handler = server()
        if self.header_timeout_s > 0:
            asyncio.get_running_loop().call_later(self.header_timeout_s, self._headers_due, handler)
        return Counted(handler, self)

    def _headers_due(self, handler: web.RequestHandler) -> None:
        # aiohttp counts parsed requests per connection; none yet means the first headers never ended.
        # Later requests on a kept-alive connection are bounded by its keep-alive timeout.
        if handler._request_count or handler.transport is None:  # noqa: SLF001
            return
        self.late_count += 1
        self.late.warn(self.late_count)
        handler.transport.write(HEADERS_LATE)
        handler.force_close()


def quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Log asyncio's "out of system resource" accept errors as one line per interval, not a traceback each."""
    exhausted = RateLimitedLog("cannot accept connections: %s")

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if str(context.get("message", "")).startswith("socket.accept() out of system resource"):
            exhausted.warn(context.get("exception"))
            return
        loop.default_exception_handler(context)

    loop.set_exception_handler(handle)


async def serve(app: web.Application, settings: Settings, **runner_args: Any) -> None:
    """Run the app until cancelled (or a signal's GracefulExit), then clean up as web.run_app does."""
    quiet_accept_errors(asyncio.get_running_loop())
    runner = web.AppRunner(app, handle_signals=True, **runner_args)
    await runner.setup()
    try:
        site = GuardedSite(runner, settings)
        await site.start()
        log.info("accepting at most %d connections; headers within %g s", site.cap, site.header_timeout_s)
        while True:
            await asyncio.sleep(3600)
    finally:
        await runner.cleanup()


def run(app: web.Application, settings: Settings, loop: asyncio.AbstractEventLoop | None, **runner_args: Any) -> None:
    """Serve on a fresh (or the given) loop until SIGTERM/SIGINT; the app's cleanup drains the writer."""
    loop = loop or asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    main = loop.create_task(serve(app, settings, **runner_args))
    try:
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        main.cancel()
        loop.run_until_complete(asyncio.gather(main, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
