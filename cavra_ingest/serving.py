"""Serve the app with the connection limits `web.run_app` has no setting for: a cap on open connections
(kept below the file-descriptor limit) and a time limit on receiving a new connection's request headers."""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from typing import Any

from aiohttp import web

from .settings import Settings

log = logging.getLogger(__name__)
# File descriptors kept for the store, logs and the listening socket beyond the connection cap.
FD_RESERVE = 64
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


# How long a refused connection is kept for its client to read the 503 before the descriptor is freed.
REFUSED_LINGER_S = 0.5


class Refused(asyncio.Protocol):
    """A connection over the cap: told 503 at once, then closed; what it sends is discarded."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(REFUSED)
        # Closing at once with unread request bytes would reset the connection before the 503 is read:
        # half-close, and free the descriptor when the client closes or after a short linger.
        transport.write_eof()
        self.closer = asyncio.get_running_loop().call_later(REFUSED_LINGER_S, transport.close)

    def eof_received(self) -> bool:
        self.transport.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closer.cancel()


def connection_cap(settings: Settings) -> int:
    """Return the configured cap, lowered below the process's soft file-descriptor limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return settings.max_connections
    return max(1, min(settings.max_connections, soft - FD_RESERVE))


class GuardedSite(web.TCPSite):
    """A TCP site whose protocol factory enforces the connection cap and the header-read time limit."""

    def __init__(self, runner: web.AppRunner, settings: Settings, **kwargs: Any) -> None:
        super().__init__(runner, settings.host, settings.port, **kwargs)
        self.cap = connection_cap(settings)
        self.header_timeout_s = settings.header_read_timeout_s
        self.over_cap = RateLimitedLog("connection cap of %d reached: new connections get 503")
        self.late = RateLimitedLog("closed %d connection(s) that sent no complete request headers in time")
        self.late_count = 0

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._protocol, self._host, self._port, backlog=self._backlog, reuse_address=self._reuse_address
        )

    def _protocol(self) -> asyncio.BaseProtocol:
        server = self._runner.server
        assert server is not None
        if len(server.connections) >= self.cap:
            self.over_cap.warn(self.cap)
            return Refused()
        handler = server()
        if self.header_timeout_s > 0:
            asyncio.get_running_loop().call_later(self.header_timeout_s, self._headers_due, handler)
        return handler

    def _headers_due(self, handler: web.RequestHandler) -> None:
        # aiohttp counts parsed requests per connection; none yet means the first headers never ended.
        # Later requests on a kept-alive connection are bounded by its keep-alive timeout.
        if handler._request_count or handler.transport is None:  # noqa: SLF001
            return
        self.late_count += 1
        self.late.warn(self.late_count)
        handler.transport.write(HEADERS_LATE)
        handler.force_close()


async def serve(app: web.Application, settings: Settings, **runner_args: Any) -> None:
    """Run the app until cancelled (or a signal's GracefulExit), then clean up as web.run_app does."""
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
