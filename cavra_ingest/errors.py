"""One JSON error shape for every error the service returns."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

log = logging.getLogger(__name__)

CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}
_PATH = re.compile(r" - at `(\$[^`]*)`$")


def error_body(status: int, detail: str, *, field: str | None = None, **extra: Any) -> dict[str, Any]:
    """Build the error object: `detail` (as CAVRA's 404s), `status`, `error`, and `field` when known."""
    body: dict[str, Any] = {"detail": detail, "status": status, "error": CODES.get(status, "error")}
    if field is not None:
        body["field"] = field
    body.update(extra)
    return body


def error_response(
    status: int,
    detail: str,
    *,
    field: str | None = None,
    retry_after: int | None = None,
    **extra: Any,
) -> web.Response:
    """Return the error as a JSON response; retryable ones carry `Retry-After`."""
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return web.Response(
        status=status,
        body=msgspec.json.encode(error_body(status, detail, field=field, **extra)),
        content_type="application/json",
        headers=headers,
    )


def validation_detail(exc: msgspec.ValidationError) -> tuple[str, str | None]:
    """Split msgspec's message into a readable detail and the field path (`$.severity`)."""
    message = str(exc)
    match = _PATH.search(message)
    if match is None:
        return message, None
    return f"{match.group(1)}: {message[: match.start()]}", match.group(1)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn aiohttp's own errors and anything unexpected into the one JSON shape."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        detail = exc.text if exc.text and not exc.text.startswith(str(exc.status)) else exc.reason
        if exc.status == 404:
            detail = "not found"
        response = error_response(exc.status, detail)
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal error")
