"""Turn a request body into validated records, with no HTTP: any transport calls this.

Whole-request problems raise ApiError; each record's own problem is returned as a Problem beside the
records that passed, so a batch can store its valid records and report the others.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from .errors import ApiError, Problem, validation_detail
from .models import SESSION_DECODER, Accepted, SessionIn, decode_decision, normalize

ARRAY_DECODER = msgspec.json.Decoder(list[msgspec.Raw])
# JSON can carry a NUL only escaped: without these bytes in the body there is none to look for.
NUL_ESCAPE = b"\\u0000"
DECODE_ERRORS = (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError)

RawRecord = bytes | msgspec.Raw
Checked = Accepted | Problem


def split_records(body: bytes, ndjson: bool) -> tuple[list[RawRecord], bool]:
    """Return the raw records and whether the body was a batch."""
    if ndjson:
        return [line for line in body.split(b"\n") if line.strip()], True
    if body.lstrip()[:1] != b"[":
        return [body], False
    try:
        return list(ARRAY_DECODER.decode(body)), True
    except (msgspec.DecodeError, RecursionError) as exc:
        raise ApiError(400, f"malformed JSON: {exc}") from None


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


def validate(raw: RawRecord, max_bytes: int, check_nul: bool = False) -> Checked:
    """Decode and normalise one record, or return its problem."""
    if len(raw) > max_bytes:
        return Problem(422, f"record exceeds {max_bytes} bytes", "$")
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
        return Problem(422, "$.timestamp: out of range once converted to UTC", "$.timestamp")


def check_decisions(
    body: bytes,
    *,
    ndjson: bool,
    request_max_records: int,
    record_max_bytes: int,
    admit: Callable[[int], None],
) -> tuple[list[Checked], bool]:
    """Split and validate a body of decisions; `admit` may refuse the count before any record is decoded."""
    raws, batch = split_records(body, ndjson)
    if len(raws) > request_max_records:
        raise ApiError(413, f"batch holds {len(raws)} records; at most {request_max_records}")
    if not raws:
        raise ApiError(400, "batch holds no decisions")
    # Refused before validation when the writer cannot take them: decoding would be wasted.
    admit(len(raws))
    check_nul = NUL_ESCAPE in body  # only then is the per-record walk needed
    return [validate(raw, record_max_bytes, check_nul) for raw in raws], batch


def check_session(body: bytes) -> SessionIn:
    """Decode a session update, or raise its problem."""
    try:
        update = SESSION_DECODER.decode(body)
    except DECODE_ERRORS as exc:
        raise ApiError.from_problem(decode_failure(exc)) from None
    if NUL_ESCAPE in body and (refused := reject_nul(update)) is not None:
        raise ApiError.from_problem(refused)
    return update
