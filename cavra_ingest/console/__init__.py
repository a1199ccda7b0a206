"""The Activity Explorer: static HTML, CSS and JS served at /console, talking only to the public JSON API."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from ..middleware import error_response

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


def _asset(path: Path) -> web.FileResponse:
    headers = {"Content-Type": CONTENT_TYPES[path.suffix], "Cache-Control": CACHE_CONTROL, **SECURITY_HEADERS}
    return web.FileResponse(path, headers=headers)


async def console_page(request: web.Request) -> web.StreamResponse:
    """Serve the single page; the view lives in the query string."""
    return _asset(STATIC / "index.html")


async def console_asset(request: web.Request) -> web.StreamResponse:
    """Serve one file of the console's allow-listed static directory."""
    name = request.match_info["name"]
    path = STATIC / name
    # The pattern already forbids "/", so only direct children of STATIC can match.
    if path.suffix not in CONTENT_TYPES or name.startswith(".") or not path.is_file():
        return error_response(404, "not found")
    return _asset(path)


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
