"""Limits that keep one client from exhausting the service: body bytes in flight, free disk, Host header,
and the security headers every response carries. docs/limits.md lists each with its setting and test."""

from __future__ import annotations

import asyncio
import functools
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import web

from .errors import ApiError
from .middleware import Handler
from .settings import Settings

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
    host = (request.host or "").lower()
    # "name:port" must match as given; a bare "name" allows any port (IPv6 literals keep their brackets).
    bare = host.rsplit(":", 1)[0] if host.rfind(":") > host.rfind("]") else host
    if hosts and host not in hosts and bare not in hosts:
        raise ApiError(421, "this server does not answer for that Host")
    return await handler(request)


def host_set(settings: Settings) -> frozenset[str]:
    """Parse CAVRA_ALLOWED_HOSTS; a bare name also allows it with any port."""
    return frozenset(name.strip().lower() for name in settings.allowed_hosts.split(",") if name.strip())


class BodyBudget:
    """Bytes of bodies being read and decoded at once; a request that would exceed it is refused unread."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0

    @asynccontextmanager
    async def reserve(self, size: int, retry_after: int) -> AsyncIterator[None]:
        if self.in_flight + size > self.limit:
            raise ApiError(
                503,
                f"too many request bodies in flight ({self.in_flight} of {self.limit} bytes); retry later",
                retry_after=retry_after,
            )
        self.in_flight += size
        try:
            yield
        finally:
            self.in_flight -= size


def check_disk(settings: Settings, path: Path) -> None:
    """Refuse a write while the store's file system is below its free-space floor."""
    if settings.min_free_disk_bytes <= 0 or settings.store_kind == "postgres":
        return
    folder = path.parent if path.parent.exists() else Path(".")
    free = shutil.disk_usage(folder).free
    if free < settings.min_free_disk_bytes:
        raise ApiError(
            503,
            f"disk space is below the floor ({free} of {settings.min_free_disk_bytes} bytes free); "
            "writes are refused, reads still work",
            retry_after=settings.retry_after_s * 30,
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


HOSTS_KEY = web.AppKey("allowed_hosts", frozenset)
BUDGET_KEY = web.AppKey("body_budget", BodyBudget)
