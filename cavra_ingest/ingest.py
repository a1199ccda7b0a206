"""Write routes: `POST /decisions` (object, array or NDJSON) and `POST /sessions`."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from aiohttp import web

from workers.writer import QueueFull, WriterClosed

from .errors import CODES, error_body, error_response, validation_detail
from .keys import SETTINGS_KEY, WRITER_KEY
from .models import ENCODER, SESSION_DECODER, Accepted, decode_decision, normalize
from .store import Outcome, StoreUnavailable, WriteItem

JSON_TYPES = frozenset({"application/json"})
NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl"})
ARRAY_DECODER = msgspec.json.Decoder(list[msgspec.Raw])
DECISION_FAILED = {"conflict": 409, "rejected": 422}
# JSON can carry a NUL only escaped: without these bytes in the body there is none to look for.
NUL_ESCAPE = b"\\u0000"


class BadRequest(Exception):
    """The request as a whole is unusable; carries the ready error response."""

    def __init__(self, response: web.Response) -> None:
        self.response = response


async def read_body(request: web.Request, *, allow_ndjson: bool) -> bytes:
    """Check the content type, then read the body within the size and time limits."""
    settings = request.app[SETTINGS_KEY]
    allowed = JSON_TYPES | NDJSON_TYPES if allow_ndjson else JSON_TYPES
    if request.content_type not in allowed and not request.content_type.endswith("+json"):
        expected = " or ".join(sorted(allowed))
        raise BadRequest(error_response(415, f"Content-Type must be {expected}, not {request.content_type}"))
    if request.content_length is not None and request.content_length > settings.max_body_bytes:
        raise BadRequest(error_response(413, f"body exceeds {settings.max_body_bytes} bytes"))
    try:
        # A timeout scope, not wait_for: no extra task per request (measured by bench/, issue 4).
        async with asyncio.timeout(settings.body_read_timeout_s):
            body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BadRequest(error_response(413, f"body exceeds {settings.max_body_bytes} bytes")) from None
    except TimeoutError:
        raise BadRequest(error_response(408, "body was not received in time")) from None
    if not body.strip():
        raise BadRequest(error_response(400, "request body is empty"))
    return body


def split_records(body: bytes, ndjson: bool) -> tuple[list[bytes | msgspec.Raw], bool]:
    """Return the raw records and whether the body was a batch."""
    if ndjson:
        return [line for line in body.split(b"\n") if line.strip()], True
    if body.lstrip()[:1] != b"[":
        return [body], False
    try:
        return list(ARRAY_DECODER.decode(body)), True
    except (msgspec.DecodeError, RecursionError) as exc:
        raise BadRequest(error_response(400, f"malformed JSON: {exc}")) from None


def nul_path(value: Any, path: str = "$") -> str | None:
    """Return the path of the first string or key holding a NUL character."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    items: Any = ()
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = ((f"[{index}]", item) for index, item in enumerate(value))
    for key, item in items:
        step = key if key.startswith("[") else f".{key}"
        if "\x00" in key:
            return f"{path}{step}"
        found = nul_path(item, f"{path}{step}")
        if found is not None:
            return found
    return None


def reject_nul(item: Any) -> dict[str, Any] | None:
    # PostgreSQL text and jsonb cannot hold NUL: refused on every store, so all stores accept the same records.
    field = nul_path(msgspec.to_builtins(item))
    if field is None:
        return None
    return error_body(422, f"{field}: NUL characters (\\u0000) are not accepted", field=field)


DECODE_ERRORS = (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError)


def decode_failure(exc: Exception) -> dict[str, Any]:
    """Map a decoding failure to its error object: 422 for the contract, 400 for the JSON itself."""
    if isinstance(exc, msgspec.ValidationError):
        detail, field = validation_detail(exc)
        return error_body(422, detail, field=field)
    if isinstance(exc, UnicodeDecodeError):
        return error_body(400, f"body is not valid UTF-8: {exc.reason} at byte {exc.start}")
    if isinstance(exc, RecursionError):
        return error_body(422, "record is nested too deeply", field="$")
    return error_body(400, f"malformed JSON: {exc}")


def validate(raw: bytes | msgspec.Raw, max_bytes: int, check_nul: bool = False) -> Accepted | dict[str, Any]:
    """Decode and normalise one record, or return its error object."""
    if len(raw) > max_bytes:
        return error_body(422, f"record exceeds {max_bytes} bytes", field="$")
    try:
        item, ignored = decode_decision(raw)
    except DECODE_ERRORS as exc:
        return decode_failure(exc)
    if check_nul and (refused := reject_nul(item)) is not None:
        return refused
    try:
        return normalize(item, ignored)
    except OverflowError:
        # A date-time at the very edge of year 1 or 9999 whose offset takes it out of range in UTC.
        return error_body(422, "$.timestamp: out of range once converted to UTC", field="$.timestamp")


def unavailable(detail: str, request: web.Request) -> web.Response:
    return error_response(503, detail, retry_after=request.app[SETTINGS_KEY].retry_after_s)


async def commit(request: web.Request, items: list[WriteItem]) -> list[Outcome] | web.Response:
    """Queue items for the writer and wait until they are committed."""
    writer = request.app[WRITER_KEY]
    try:
        future = writer.submit(items)
    except QueueFull:
        return unavailable("ingest queue is full; retry later", request)
    except WriterClosed:
        return unavailable("server is shutting down; retry later", request)
    try:
        return await future
    except StoreUnavailable as exc:
        return unavailable(f"store unavailable, nothing was written: {exc}", request)
    except WriterClosed:
        return unavailable("server is shutting down; nothing was written", request)


def _with_fields(body: bytes, **fields: Any) -> bytes:
    # Appends keys to a stored JSON object without decoding it again.
    extra = {key: value for key, value in fields.items() if value}
    if not extra:
        return body
    return body[:-1] + b"," + ENCODER.encode(extra)[1:]


def single_response(accepted: Accepted, outcome: Outcome) -> web.Response:
    if outcome.status in ("created", "duplicate"):
        body = _with_fields(
            outcome.body, duplicate=outcome.status == "duplicate", ignored_fields=accepted.ignored_fields
        )
        return web.Response(body=body, content_type="application/json")
    if outcome.status == "conflict":
        return error_response(
            409,
            f"decision {accepted.record.decision_id} is already stored with different content",
            decision_id=accepted.record.decision_id,
        )
    return error_response(422, outcome.body.decode(), decision_id=accepted.record.decision_id)


def result_entry(index: int, accepted: Accepted | None, outcome: Outcome | None, error: dict[str, Any] | None):
    entry: dict[str, Any] = {"index": index, "decision_id": None, "status": "invalid", "error": error}
    if accepted is not None:
        entry["decision_id"] = accepted.record.decision_id
        if accepted.ignored_fields:
            entry["ignored_fields"] = accepted.ignored_fields
    if outcome is not None:
        entry["status"] = outcome.status
        failed = DECISION_FAILED.get(outcome.status)
        if failed == 409:
            entry["error"] = error_body(409, "decision_id is already stored with different content")
        elif failed == 422:
            entry["error"] = error_body(422, outcome.body.decode())
    return entry


async def post_decisions(request: web.Request) -> web.Response:
    """Validate, commit and report decisions; a 2xx means every accepted one is committed."""
    settings = request.app[SETTINGS_KEY]
    writer = request.app[WRITER_KEY]
    if writer.closing:
        return unavailable("server is shutting down; retry later", request)
    if writer.pending_records >= writer.queue_max_records:
        # Shed before reading and decoding the body: under a burst that is most of the cost.
        return unavailable("ingest queue is full; retry later", request)
    ndjson = request.content_type in NDJSON_TYPES
    try:
        body = await read_body(request, allow_ndjson=True)
        raws, batch = split_records(body, ndjson)
    except BadRequest as bad:
        return bad.response
    if len(raws) > settings.max_batch_records:
        return error_response(413, f"batch holds {len(raws)} records; at most {settings.max_batch_records}")
    if not raws:
        return error_response(400, "batch holds no decisions")
    if writer.pending_records + len(raws) > writer.queue_max_records:
        # Also refused before validation: this body's records would overfill the queue, so decoding is wasted.
        return unavailable("ingest queue is full; retry later", request)
    check_nul = NUL_ESCAPE in body  # only then is the per-record walk needed
    checked = [validate(raw, settings.max_record_bytes, check_nul) for raw in raws]
    accepted = [item for item in checked if isinstance(item, Accepted)]
    outcomes: list[Outcome] = []
    if accepted:
        committed = await commit(request, list(accepted))
        if isinstance(committed, web.Response):
            return committed
        outcomes = committed
    if not batch:
        only = checked[0]
        if isinstance(only, Accepted):
            return single_response(only, outcomes[0])
        return web.Response(status=only["status"], body=ENCODER.encode(only), content_type="application/json")
    return batch_response(checked, outcomes)


def batch_response(checked: list[Accepted | dict[str, Any]], outcomes: list[Outcome]) -> web.Response:
    results = []
    pending = iter(outcomes)
    for index, item in enumerate(checked):
        if isinstance(item, Accepted):
            results.append(result_entry(index, item, next(pending), None))
        else:
            results.append(result_entry(index, None, None, item))
    counts = {"created": 0, "duplicate": 0}
    failures: set[int] = set()
    for entry in results:
        if entry["error"] is None:
            counts[entry["status"]] += 1
        else:
            failures.add(entry["error"]["status"])
    status = 200
    if failures:
        # 207 when some records failed; when all failed alike, their own status.
        status = failures.pop() if len(failures) == 1 and not any(counts.values()) else 207
    body = {
        "results": results,
        "created": counts["created"],
        "duplicates": counts["duplicate"],
        "failed": len(results) - sum(counts.values()),
    }
    if status >= 400:
        # The one error shape, so a client reading `error` needs no special case for batches.
        body["detail"] = "no record in the batch was accepted"
        body["status"] = status
        body["error"] = CODES.get(status, "error")
    return web.Response(status=status, body=ENCODER.encode(body), content_type="application/json")


async def post_sessions(request: web.Request) -> web.Response:
    """Create or update a session's state and descriptive fields."""
    if request.app[WRITER_KEY].closing:
        return unavailable("server is shutting down; retry later", request)
    try:
        body = await read_body(request, allow_ndjson=False)
    except BadRequest as bad:
        return bad.response
    try:
        update = SESSION_DECODER.decode(body)
    except DECODE_ERRORS as exc:
        failure = decode_failure(exc)
        return web.Response(status=failure["status"], body=ENCODER.encode(failure), content_type="application/json")
    if NUL_ESCAPE in body and (refused := reject_nul(update)) is not None:
        return web.Response(status=422, body=ENCODER.encode(refused), content_type="application/json")
    committed = await commit(request, [update])
    if isinstance(committed, web.Response):
        return committed
    return web.Response(body=committed[0].body, content_type="application/json")
