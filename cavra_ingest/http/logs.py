"""Logging: plain text for a terminal or JSON lines, a request id on every line, one access line per request."""

from __future__ import annotations

import contextvars
import itertools
import json
import logging
import os
import re
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from cavra_ingest.http.keys import DRAIN_FROM_KEY, METRICS_KEY, SETTINGS_KEY, SINK_KEY
from cavra_ingest.http.middleware import Handler

REQUEST_ID_HEADER = "X-Request-ID"
ACCESS = "%s %s %d"
# A client's id is echoed and logged, so only a short token of safe characters is taken as it is.
CLIENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
access_log = logging.getLogger("cavra_ingest.access")
log = logging.getLogger("cavra_ingest.server")
# LogRecord attributes that are not extra fields.
STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "request_id"}


class RequestIds:
    """Made request ids: a random prefix per process and a counter, 32 hex characters like a uuid4's hex
    but without a uuid4 per request (its random bytes and object cost more than the rest of the id)."""

    def __init__(self) -> None:
        self.reset()
        # A forked child would repeat its parent's ids: it takes a prefix of its own.
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self.prefix = os.urandom(8).hex()
        self.counter = itertools.count(1)

    def next(self) -> str:
        return f"{self.prefix}{next(self.counter) & 0xFFFF_FFFF_FFFF_FFFF:016x}"


REQUEST_IDS = RequestIds()


class SecondFormatter(logging.Formatter):
    """formatTime with one strftime per second of log lines, not one per line (an access line per request)."""

    _cached: tuple[int, str | None, str] = (-1, None, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        second, fmt, text = self._cached
        if second != int(record.created) or fmt != datefmt:
            second, fmt = int(record.created), datefmt
            text = time.strftime(datefmt or self.default_time_format, self.converter(record.created))
            self._cached = (second, fmt, text)
        if datefmt or not self.default_msec_format:
            return text
        return self.default_msec_format % (text, record.msecs)


class RequestIdFilter(logging.Filter):
    """Stamp each record with the id of the request being handled, if any."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class JsonFormatter(SecondFormatter):
    """One JSON object per line: time, level, logger, message, request id and any `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None)
        if rid:
            entry["request_id"] = rid
        entry.update({key: value for key, value in record.__dict__.items() if key not in STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(SecondFormatter):
    """Readable lines for a terminal; extra fields follow as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = {key: value for key, value in record.__dict__.items() if key not in STANDARD}
        rid = getattr(record, "request_id", None)
        if rid:
            extra = {"request_id": rid, **extra}
        return " ".join([line, *(f"{key}={value}" for key, value in extra.items())])


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Write to whatever `sys.stderr` is when a record comes (a test runner may have swapped it since)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure(log_format: str = "text", level: str = "INFO", stream: Any = None) -> None:
    """Send every logger's records to stderr in the chosen format (replacing the handler set here before)."""
    handler = logging.StreamHandler(stream) if stream is not None else StderrHandler()
    handler.set_name("cavra-ingest")
    handler.addFilter(RequestIdFilter())
    if log_format == "json":
        formatter: logging.Formatter = JsonFormatter()
        formatter.converter = time.gmtime
    else:
        formatter = TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    handler.setFormatter(formatter)
    root = logging.getLogger()
    # Others' handlers (a test runner's capture) stay; only ours is replaced.
    root.handlers[:] = [h for h in root.handlers if h.get_name() != "cavra-ingest"] + [handler]
    root.setLevel(level.upper())


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give the request an id (echoed back), then count it and write its access line."""
    given = request.headers.get(REQUEST_ID_HEADER, "")
    rid = given if given and CLIENT_ID.fullmatch(given) else REQUEST_IDS.next()
    token = request_id.set(rid)
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        if not response.prepared:
            response.headers[REQUEST_ID_HEADER] = rid
        return response
    except web.HTTPException as exc:
        # Redirects (and anything the error middleware let through) are raised, not returned.
        status = exc.status
        exc.headers[REQUEST_ID_HEADER] = rid
        raise
    finally:
        seconds = time.perf_counter() - started
        app = request.app
        if METRICS_KEY in app:
            app[METRICS_KEY].observe_request(request, status, seconds)
        if app[SETTINGS_KEY].server.access_log and access_log.isEnabledFor(logging.INFO):
            method, path = request.method, request.path
            extra = {
                "method": method,
                "path": path,
                "status": status,
                "duration_ms": round(seconds * 1000, 2),
                "remote": request.remote,
            }
            # What access_log.info() does, less looking up the calling file and line: no format shows them.
            args = (method, path, status)
            access_log.handle(
                access_log.makeRecord(access_log.name, logging.INFO, __file__, 0, ACCESS, args, None, None, extra)
            )
        request_id.reset(token)


async def lifecycle(app: web.Application) -> AsyncIterator[None]:
    """Log start-up and, after the writer has drained and the store closed, what was drained."""
    settings = app[SETTINGS_KEY]
    log.info(
        "starting",
        extra={"store": settings.store.kind, "location": settings.store.label, "host": settings.server.host,
               "port": settings.server.port},
    )  # fmt: skip
    app[DRAIN_FROM_KEY] = [0, 0]
    yield
    stats = app[SINK_KEY].health().stats if SINK_KEY in app else None
    before = app[DRAIN_FROM_KEY]
    log.info(
        "stopped",
        extra={
            # What the drain committed after the stop request, then the totals since start.
            "drained_transactions": stats.transactions - before[0] if stats else 0,
            "drained_records": stats.records - before[1] if stats else 0,
            "transactions": stats.transactions if stats else 0,
            "records": stats.records if stats else 0,
            "failed_transactions": stats.failed_transactions if stats else 0,
        },
    )


async def shutting_down(app: web.Application) -> None:
    """Log the stop request and what is still queued for the writer to drain."""
    health = app[SINK_KEY].health() if SINK_KEY in app else None
    if health is not None:
        app[DRAIN_FROM_KEY][:] = [health.stats.transactions, health.stats.records]
    log.info(
        "stopping: draining the writer",
        extra={
            "queued_records": health.queued_records if health else 0,
            "drain_deadline_s": app[SETTINGS_KEY].writer.drain_deadline_s,
        },
    )
