"""HTTP rendering shared by every handler: encoded replies and the error middleware."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from cavra_ingest.core.errors import ApiError, Retryable, error_body
from cavra_ingest.core.models import ENCODER
from cavra_ingest.http.keys import SETTINGS_KEY

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_reply(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """Encode a reply Struct (or already encoded bytes) as a JSON response."""
    body = value if isinstance(value, bytes) else ENCODER.encode(value)
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def error_response(status: int, detail: str, **extra: Any) -> web.Response:
    """Render an error in the one shape, for code that answers instead of raising (static files)."""
    error = ApiError(status, detail, **extra)
    return json_reply(error.body(), status, error.headers or None)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render ApiError, aiohttp's own errors and anything unexpected in the one JSON shape."""
    try:
        return await handler(request)
    except ApiError as exc:
        return json_reply(exc.body(), exc.status, exc.headers or None)
    except Retryable as exc:
        # A full queue, a locked store, a heavy read out of time: nothing was done, a retry may succeed.
        retry_after = str(request.app[SETTINGS_KEY].server.retry_after_s)
        return json_reply(error_body(exc.status, str(exc)), exc.status, {"Retry-After": retry_after})
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        detail = exc.text if exc.text and not exc.text.startswith(str(exc.status)) else exc.reason
        if exc.status == 404:
            detail = "not found"
        headers = {"Allow": exc.headers["Allow"]} if exc.status == 405 and "Allow" in exc.headers else None
        return json_reply(error_body(exc.status, detail), exc.status, headers)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return json_reply(error_body(500, "internal error"), 500)
