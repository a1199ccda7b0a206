"""Opt-in CORS for the read routes, for CAVRA's console hosted on another origin (`CAVRA_CORS_ORIGINS`)."""

from __future__ import annotations

from aiohttp import web
from yarl import URL

from cavra_ingest.core.errors import ApiError
from cavra_ingest.http.keys import ORIGINS_KEY
from cavra_ingest.http.middleware import Handler

READ_METHODS = frozenset({"GET", "HEAD"})
# Request headers a cross-origin read may carry; Authorization for bearer tokens.
ALLOWED_HEADERS = ("authorization", "accept", "if-none-match")
MAX_AGE_S = 600


def parse_origins(text: str) -> frozenset[str]:
    """Read a comma-separated list of exact origins (`https://console.example:8443`); no wildcard."""
    origins = set()
    for raw in (part.strip() for part in text.split(",")):
        if not raw:
            continue
        url = URL(raw)
        if "*" in raw or url.scheme not in {"http", "https"} or not url.host or raw.rstrip("/") != str(url.origin()):
            # Credentials (the Authorization header) may only be shared with origins named exactly.
            raise ValueError(f"CAVRA_CORS_ORIGINS takes exact origins like https://host:port, not {raw!r}")
        origins.add(str(url.origin()))
    return frozenset(origins)


@web.middleware
async def preflight(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer a preflight from an allowed origin for a read; refuse one for anything else."""
    origin = request.headers.get("Origin")
    wanted = request.headers.get("Access-Control-Request-Method")
    if request.method != "OPTIONS" or origin is None or wanted is None:
        return await handler(request)
    if origin not in request.app[ORIGINS_KEY]:
        raise ApiError(403, f"origin {origin} is not in CAVRA_CORS_ORIGINS")
    if wanted.upper() not in READ_METHODS:
        raise ApiError(403, f"cross-origin {wanted} is not allowed: only reads (GET, HEAD)")
    asked = [h.strip().lower() for h in request.headers.get("Access-Control-Request-Headers", "").split(",")]
    refused = [h for h in asked if h and h not in ALLOWED_HEADERS]
    if refused:
        raise ApiError(403, f"cross-origin request header(s) not allowed: {', '.join(refused)}")
    headers = {
        "Access-Control-Allow-Methods": "GET, HEAD",
        "Access-Control-Allow-Headers": ", ".join(ALLOWED_HEADERS),
        "Access-Control-Max-Age": str(MAX_AGE_S),
    }
    return web.Response(status=204, headers=headers)


async def allow_origin(request: web.Request, response: web.StreamResponse) -> None:
    """Mark a read's (or preflight's) response readable by an allowed origin, streams included."""
    origin = request.headers.get("Origin")
    response.headers.add("Vary", "Origin")
    if origin is None or origin not in request.app[ORIGINS_KEY]:
        return
    if request.method in READ_METHODS or (request.method == "OPTIONS" and response.status == 204):
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Credentials"] = "true"
        response.headers["Access-Control-Expose-Headers"] = "Retry-After"


def install(app: web.Application, origins_text: str) -> None:
    """Turn CORS on for the listed origins: preflights for reads, headers on read responses."""
    app[ORIGINS_KEY] = parse_origins(origins_text)
    app.middlewares.append(preflight)
    app.on_response_prepare.append(allow_origin)
