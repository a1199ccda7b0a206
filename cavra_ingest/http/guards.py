"""Limits that keep one client from exhausting the service: body bytes in flight, free disk, Host header,
and the security headers every response carries. docs/limits.md lists each with its setting and test."""

from __future__ import annotations

import asyncio
import functools
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from aiohttp import web

from cavra_ingest.core.errors import ApiError
from cavra_ingest.http.keys import HOSTS_KEY
from cavra_ingest.http.middleware import Handler
from cavra_ingest.settings import Settings

# Sent on every response, errors and streams included; pages with their own policy (console, docs) add a CSP.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    # No version: it only helps whoever looks for a known advisory.
    "Server": "cavra-ingest",
}


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Add the security headers without overriding a page's own, stricter, Content-Security-Policy."""
    for name, value in SECURITY_HEADERS.items():
        if name == "Content-Security-Policy" and name in response.headers:
            continue
        response.headers[name] = value


@web.middleware
async def allowed_hosts(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse requests whose Host header is not allowed (a DNS-rebinding page names its own host)."""
    hosts = request.app[HOSTS_KEY]
    if not hosts:  # CAVRA_ALLOWED_HOSTS unset: any Host (the default)
        return await handler(request)
    host = (request.host or "").lower()
    # "name:port" must match as given; a bare "name" allows any port (IPv6 literals keep their brackets).
    bare = host.rsplit(":", 1)[0] if host.rfind(":") > host.rfind("]") else host
    if host not in hosts and bare not in hosts:
        raise ApiError(421, "this server does not answer for that Host")
    return await handler(request)


def host_set(settings: Settings) -> frozenset[str]:
    """Parse CAVRA_ALLOWED_HOSTS; a bare name also allows it with any port."""
    return frozenset(name.strip().lower() for name in settings.server.allowed_hosts.split(",") if name.strip())


class BodyBudget:
    """Bytes of bodies being read and decoded at once; a request that would exceed it is refused unread."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0

    def reserve(self, size: int, retry_after: int) -> Reservation:
        return Reservation(self, size, retry_after)


class Reservation:
    """`async with budget.reserve(size, retry_after)`: a plain class, cheaper per request than a generator."""

    __slots__ = ("budget", "size", "retry_after")

    def __init__(self, budget: BodyBudget, size: int, retry_after: int) -> None:
        self.budget, self.size, self.retry_after = budget, size, retry_after

    async def __aenter__(self) -> None:
        budget = self.budget
        if budget.in_flight + self.size > budget.limit:
            raise ApiError(
                503,
                f"too many request bodies in flight ({budget.in_flight} of {budget.limit} bytes); retry later",
                retry_after=self.retry_after,
            )
        budget.in_flight += self.size

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.budget.in_flight -= self.size


# Free space is read at most this often: a statvfs (and a stat of the folder) per write cost more than
# the rest of the write guards, and one second of writes past the floor is within any sane floor's margin.
DISK_CHECK_INTERVAL_S = 1.0


class DiskFloor:
    """Refuse writes while the store's file system is below its free-space floor (CAVRA_MIN_FREE_DISK_BYTES)."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self.floor = settings.limits.min_free_disk_bytes
        self.enabled = self.floor > 0 and settings.store.kind != "postgres"
        self.path = settings.store.path if self.enabled else Path(".")
        self.retry_after = settings.server.retry_after_s * 30
        self.clock = clock
        self.free = 0
        self.read_at = -float("inf")

    def check(self) -> None:
        if not self.enabled:
            return
        now = self.clock()
        if now - self.read_at >= DISK_CHECK_INTERVAL_S:
            folder = self.path.parent if self.path.parent.exists() else Path(".")
            self.free, self.read_at = shutil.disk_usage(folder).free, now
        if self.free < self.floor:
            raise ApiError(
                503,
                f"disk space is below the floor ({self.free} of {self.floor} bytes free); "
                "writes are refused, reads still work",
                retry_after=self.retry_after,
            )


# How often a heavy read looks whether its client is still there (aiohttp does not cancel handlers).
DISCONNECT_POLL_S = 0.1


def cancel_on_disconnect(handler: Handler) -> Handler:
    """Cancel a heavy read's handler (and so its statement) as soon as its client has gone away."""

    @functools.wraps(handler)
    async def watched(request: web.Request) -> web.StreamResponse:
        task = asyncio.ensure_future(handler(request))
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
                if done:
                    return task.result()
                if request.transport is None or request.transport.is_closing():
                    task.cancel()
                    # Nobody will read it: an answer only so aiohttp has one.
                    return web.Response(status=400, text="client went away")
        finally:
            if not task.done():
                task.cancel()

    return watched
