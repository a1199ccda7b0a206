"""The Activity Explorer: static HTML, CSS and JS served at /console, talking only to the public JSON API.

Imports: core.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from aiohttp import web

from cavra_ingest.core.errors import ApiError

STATIC = Path(__file__).parent / "static"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# The console needs nothing beyond its own origin; a strict policy keeps injected markup inert.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# File names carry no content hash, so browsers revalidate (cheap 304s through ETag) instead of guessing.
CACHE_CONTROL = "no-cache"


# path -> (mtime_ns, size, ETag, body). The page loads some twenty small files at once: answering each from
# memory takes no trip to a thread for stat and open (as a FileResponse does); the stat on every request
# keeps an edited file current.
_loaded: dict[str, tuple[int, int, str, bytes]] = {}


def _read(path: Path) -> tuple[str, bytes]:
    stat = os.stat(path)
    known = _loaded.get(str(path))
    if known is None or known[:2] != (stat.st_mtime_ns, stat.st_size):
        body = path.read_bytes()
        etag = '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'
        known = _loaded[str(path)] = (stat.st_mtime_ns, stat.st_size, etag, body)
    return known[2], known[3]


def _asset(request: web.Request, path: Path) -> web.Response:
    etag, body = _read(path)
    headers = {"Cache-Control": CACHE_CONTROL, "ETag": etag, **SECURITY_HEADERS}
    asked = {tag.strip().removeprefix("W/") for tag in request.headers.get("If-None-Match", "").split(",")}
    if etag in asked or "*" in asked:
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPES[path.suffix], **headers})


async def console_page(request: web.Request) -> web.StreamResponse:
    """Serve the single page; the view lives in the query string."""
    return _asset(request, STATIC / "index.html")


async def console_asset(request: web.Request) -> web.StreamResponse:
    """Serve one file of the console's allow-listed static directory."""
    name = request.match_info["name"]
    path = STATIC / name
    # The pattern already forbids "/", so only direct children of STATIC can match.
    if path.suffix not in CONTENT_TYPES or name.startswith(".") or not path.is_file():
        # Rendered by the error middleware in the one shape, as every other 404.
        raise ApiError(404, "not found")
    return _asset(request, path)


async def to_console(request: web.Request) -> web.StreamResponse:
    """Send people who open the bare host (or /console/) to the explorer."""
    location = "/console" + (f"?{request.query_string}" if request.query_string else "")
    raise web.HTTPFound(location)


def add_console_routes(app: web.Application) -> None:
    """Register /console, its static files, and the redirects to it."""
    app.router.add_get("/", to_console)
    app.router.add_get("/console", console_page)
    app.router.add_get("/console/", to_console)
    app.router.add_get(r"/console/static/{name:[A-Za-z0-9_.-]+}", console_asset)
