"""One error shape for every error the service returns, and the exception that carries it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import msgspec

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
    421: "misdirected_request",
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
    body.update({key: value for key, value in extra.items() if value is not None})
    return body


@dataclass(frozen=True)
class Problem:
    """What is wrong with one record or one request, as data: any transport renders it."""

    status: int
    detail: str
    field: str | None = None

    def body(self, **extra: Any) -> dict[str, Any]:
        return error_body(self.status, self.detail, field=self.field, **extra)


class Retryable(Exception):
    """Nothing was done and a retry may succeed: rendered with this status and a Retry-After header."""

    status = 503


class ApiError(Exception):
    """Raised anywhere below a handler; the error middleware renders it in the one shape."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        field: str | None = None,
        parameter: str | None = None,
        retry_after: int | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.retry_after = retry_after
        self.headers = dict(headers or {})
        if retry_after is not None:
            self.headers["Retry-After"] = str(retry_after)
        self.extra = {"field": field, "parameter": parameter, **extra}

    @classmethod
    def from_problem(cls, problem: Problem) -> ApiError:
        return cls(problem.status, problem.detail, field=problem.field)

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.detail, **self.extra)


def validation_detail(exc: msgspec.ValidationError) -> tuple[str, str | None]:
    """Split msgspec's message into a readable detail and the field path (`$.severity`)."""
    message = str(exc)
    match = _PATH.search(message)
    if match is None:
        return message, None
    return f"{match.group(1)}: {message[: match.start()]}", match.group(1)
