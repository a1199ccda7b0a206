"""Turn a request body into validated records, with no HTTP: any transport calls this.

Whole-request problems raise ApiError; each record's own problem is returned as a Problem beside the
records that passed, so a batch can store its valid records and report the others.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from cavra_ingest.core.errors import ApiError, Problem, validation_detail
from cavra_ingest.core.models import SESSION_DECODER, Accepted, SessionIn, decode_decision, normalize, utc_text

ARRAY_DECODER = msgspec.json.Decoder(list[msgspec.Raw])
# JSON can carry a NUL only escaped: without these bytes in the body there is none to look for.
NUL_ESCAPE = b"\\u0000"
DECODE_ERRORS = (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError)

RawRecord = bytes | msgspec.Raw
Checked = Accepted | Problem


_LINE = re.compile(rb"[^\n]*\S[^\n]*")


@dataclass(frozen=True)
class TimeWindow:
    """How far a client timestamp may lie ahead of the server clock, and how far behind (0: no bound)."""

    future_s: float = 300.0
    past_s: float = 0.0


@functools.lru_cache(maxsize=4)
def bounded_array(limit: int) -> msgspec.json.Decoder[Any]:
    """Decode at most `limit + 1` top-level elements: array_like Structs skip extra trailing elements
    without building them, so an 8 MiB array of numbers costs no more memory than `limit` records."""
    fields = [(f"r{index}", msgspec.Raw, msgspec.Raw()) for index in range(limit + 1)]
    return msgspec.json.Decoder(msgspec.defstruct("Batch", fields, array_like=True))


def too_many(limit: int) -> ApiError:
    return ApiError(413, f"batch holds more than {limit} records; at most {limit}")


def split_records(body: bytes, ndjson: bool, limit: int = 1 << 62) -> tuple[list[RawRecord], bool]:
    """Return the raw records and whether the body was a batch; stop at `limit + 1` records (413)."""
    if ndjson:
        if body.count(b"\n") < limit:
            return [line for line in body.split(b"\n") if line.strip()], True
        lines: list[RawRecord] = []
        for match in _LINE.finditer(body):
            lines.append(match.group())
            if len(lines) > limit:
                raise too_many(limit)
        return lines, True
    if body.lstrip()[:1] != b"[":
        return [body], False
    try:
        if body.count(b",") < limit:
            return list(ARRAY_DECODER.decode(body)), True
        decoded = msgspec.structs.astuple(bounded_array(limit).decode(body))
    except (msgspec.DecodeError, RecursionError) as exc:
        raise ApiError(400, f"malformed JSON: {exc}") from None
    except msgspec.ValidationError as exc:  # only the trailing JSON check can fail here
        raise ApiError(400, f"malformed JSON: {exc}") from None
    if len(decoded[limit]):
        raise too_many(limit)
    # Given elements are never empty (even `null` is 4 bytes); the defaults after them are.
    return [raw for raw in decoded if len(raw)], True


def nul_path(value: Any) -> str | None:
    """Return the path of the first string or key holding a NUL character (iterative: any depth)."""
    stack: list[tuple[str, Any]] = [("$", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return path
            continue
        children: list[tuple[str, Any]] = []
        if isinstance(item, dict):
            for key, child in item.items():
                if "\x00" in key:
                    return f"{path}.{key}"
                children.append((f"{path}.{key}", child))
        elif isinstance(item, list):
            children = [(f"{path}[{index}]", child) for index, child in enumerate(item)]
        # Reversed onto the stack, so the first child is looked at first.
        stack.extend(reversed(children))
    return None


def reject_nul(item: Any) -> Problem | None:
    """Refuse NUL on every store: PostgreSQL text and jsonb cannot hold it."""
    field = nul_path(msgspec.to_builtins(item))
    if field is None:
        return None
    return Problem(422, f"{field}: NUL characters (\\u0000) are not accepted", field)


def decode_failure(exc: Exception) -> Problem:
    """Map a decoding failure to its problem: 422 for the contract, 400 for the JSON itself."""
    if isinstance(exc, msgspec.ValidationError):
        detail, field = validation_detail(exc)
        return Problem(422, detail, field)
    if isinstance(exc, UnicodeDecodeError):
        return Problem(400, f"body is not valid UTF-8: {exc.reason} at byte {exc.start}")
    if isinstance(exc, RecursionError):
        return Problem(422, "record is nested too deeply", "$")
    return Problem(400, f"malformed JSON: {exc}")


def check_time(item: Any, window: TimeWindow, now: datetime) -> Problem | None:
    """Refuse a client timestamp too far in the future (or, when bounded, in the past)."""
    moment = item.timestamp
    if moment is None:
        return None
    if window.future_s > 0 and moment > now + timedelta(seconds=window.future_s):
        return Problem(
            422,
            f"$.timestamp: more than {window.future_s:g} s in the future of the server clock "
            "(rule: CAVRA_MAX_FUTURE_SKEW_S)",
            "$.timestamp",
        )
    if window.past_s > 0 and moment < now - timedelta(seconds=window.past_s):
        return Problem(
            422,
            f"$.timestamp: older than the {window.past_s:g} s horizon (rule: CAVRA_MAX_PAST_AGE_S)",
            "$.timestamp",
        )
    return None


def validate(
    raw: RawRecord,
    max_bytes: int,
    check_nul: bool = False,
    window: TimeWindow | None = None,
    now: datetime | None = None,
) -> Checked:
    """Decode and normalise one record, or return its problem; `now` is the server clock at receipt."""
    if len(raw) > max_bytes:
        return Problem(422, f"record exceeds {max_bytes} bytes", "$")
    try:
        item, ignored = decode_decision(raw)
    except DECODE_ERRORS as exc:
        return decode_failure(exc)
    if check_nul and (refused := reject_nul(item)) is not None:
        return refused
    now = now or datetime.now(UTC)
    try:
        if window is not None and (late := check_time(item, window, now)) is not None:
            return late
        return normalize(item, ignored, received_at=utc_text(now))
    except OverflowError:
        # A date-time at the very edge of year 1 or 9999 whose offset takes it out of range in UTC.
        return Problem(422, "$.timestamp: out of range once converted to UTC", "$.timestamp")


def check_decisions(
    body: bytes,
    *,
    ndjson: bool,
    request_max_records: int,
    record_max_bytes: int,
    admit: Callable[[int], None],
    window: TimeWindow | None = None,
) -> tuple[list[Checked], bool]:
    """Split and validate a body of decisions; `admit` may refuse the count before any record is decoded."""
    raws, batch = split_records(body, ndjson, request_max_records)
    if len(raws) > request_max_records:
        raise ApiError(413, f"batch holds {len(raws)} records; at most {request_max_records}")
    if not raws:
        raise ApiError(400, "batch holds no decisions")
    # Refused before validation when the writer cannot take them: decoding would be wasted.
    admit(len(raws))
    check_nul = NUL_ESCAPE in body  # only then is the per-record walk needed
    # One reading of the clock per request: every record of a body is received at the same moment.
    now = datetime.now(UTC)
    return [validate(raw, record_max_bytes, check_nul, window, now) for raw in raws], batch


def check_session(body: bytes) -> SessionIn:
    """Decode a session update, or raise its problem."""
    try:
        update = SESSION_DECODER.decode(body)
    except DECODE_ERRORS as exc:
        raise ApiError.from_problem(decode_failure(exc)) from None
    if NUL_ESCAPE in body and (refused := reject_nul(update)) is not None:
        raise ApiError.from_problem(refused)
    return update
