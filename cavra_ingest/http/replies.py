"""Reply shapes: each is built from these Structs, and /openapi.json is generated from the same ones."""

from __future__ import annotations

from typing import Any, Literal, cast

import msgspec
from msgspec import Struct

from cavra_ingest.core.errors import CODES, ApiError, Problem
from cavra_ingest.core.models import ENCODER, Accepted, DecisionRecord, RejectionReply, SessionRecord
from cavra_ingest.core.sink import CountsHealth, SearchHealth, WriteResult, WriterStats


class Error(Struct, omit_defaults=True):
    """The one error shape; `field` or `parameter` name what was wrong when known."""

    detail: str
    status: int
    error: str
    field: str | None = None
    parameter: str | None = None
    decision_id: str | None = None


class DecisionReply(DecisionRecord, omit_defaults=True):
    """The stored record; `duplicate` when it was already stored, `ignored_fields` when some were unknown."""

    duplicate: bool = False
    ignored_fields: list[str] = []
    # JetStream mode (202): the record is durable in the log, not yet committed to the database.
    accepted: bool = False


class BatchResult(Struct, omit_defaults=True):
    """What became of one record of a batch, by its position."""

    index: int
    decision_id: str | None
    status: Literal["created", "duplicate", "conflict", "rejected", "invalid", "forbidden", "accepted"]
    error: Error | None
    ignored_fields: list[str] = []


class BatchReply(Struct, omit_defaults=True):
    """A batch's per-record results; when every record failed alike, also the error fields."""

    results: list[BatchResult]
    created: int
    duplicates: int
    failed: int
    detail: str | None = None
    status: int | None = None
    error: str | None = None
    # JetStream mode: records durable in the log, to be committed by a worker (a 202 when none failed).
    accepted: int = 0


class DecisionPage(Struct):
    items: list[DecisionRecord]
    total: int | None
    limit: int
    offset: int
    next_cursor: str | None


class SessionPage(Struct):
    items: list[SessionRecord]
    total: int | None
    limit: int
    offset: int
    next_cursor: str | None


class Timeline(Struct):
    """A session's summary and its decisions, oldest first."""

    session: SessionRecord
    items: list[DecisionRecord]
    total: int | None
    limit: int
    offset: int
    next_cursor: str | None


class SinkLag(Struct):
    name: str
    lag_records: int
    lag_seconds: float


class SinksHealth(Struct):
    total: int
    # Sinks whose lag is over CAVRA_SINK_LAG_ALERT_S (a paused sink with records waiting lags too).
    lagging: list[SinkLag]


class Health(Struct):
    status: Literal["ok", "stopping"]
    store: str
    queued_records: int
    queue_capacity: int
    writer: WriterStats
    # The background search indexer, when it runs (SQLite, PostgreSQL).
    search: SearchHealth | None = None
    # The background folder of the decision counts (SQLite).
    counts: CountsHealth | None = None
    # The sinks this process knows of, and those lagging over their threshold (docs/streaming.md).
    sinks: SinksHealth | None = None


class ConsoleFilters(Struct):
    """The query filters each listing accepts (`GET /decisions`, `GET /sessions`)."""

    decisions: list[str]
    sessions: list[str]


class ConsoleEnums(Struct):
    """The allowed values of the enumerated filters."""

    decision: list[str]
    severity: list[str]
    state: list[str]


class ConsoleConfig(Struct):
    """What the console needs to draw itself: limits, filter names, enum values, facet fields."""

    activity_mode: str
    request_max_records: int
    max_body_bytes: int
    default_limit: int
    max_limit: int
    filters: ConsoleFilters
    enums: ConsoleEnums
    facet_fields: list[str]
    # CAVRA's console reads these two (without them it shows "API: sample"), and cors_origins.
    metadata_mode: Literal["api"]
    api_base_url: str
    cors_origins: list[str]


class FacetCount(Struct):
    value: str | None
    count: int


class Facets(Struct):
    total: int
    top: int
    facets: dict[str, list[FacetCount]]


class HistogramBucket(Struct):
    """Matches from `start` (inclusive) to `end` (exclusive), per outcome."""

    start: str
    end: str
    total: int
    counts: dict[str, int]


class Histogram(Struct):
    """Matching decisions per time bucket; buckets are aligned to the interval from the Unix epoch (UTC)."""

    interval: str
    interval_seconds: int
    since: str | None
    until: str | None
    total: int
    buckets: list[HistogramBucket]


def stored(payloads: list[bytes]) -> Any:
    """Pass stored JSON through unparsed; it is already the record the reply's schema names."""
    return cast(Any, [msgspec.Raw(payload) for payload in payloads])


def error_of(problem: Problem, **extra: Any) -> Error:
    return Error(problem.detail, problem.status, CODES.get(problem.status, "error"), field=problem.field, **extra)


FAILED = {"conflict": Problem(409, "decision_id is already stored with different content")}


def decision_reply(accepted: Accepted, result: WriteResult) -> bytes:
    """Encode a single decision's DecisionReply, or raise its error."""
    if result.status == "conflict":
        raise ApiError(
            409,
            f"decision {accepted.record.decision_id} is already stored with different content",
            decision_id=accepted.record.decision_id,
        )
    if result.status == "rejected":
        raise ApiError(422, result.body.decode(), decision_id=accepted.record.decision_id)
    if result.status == "forbidden":
        raise ApiError(403, result.body.decode(), decision_id=accepted.record.decision_id)
    # The stored JSON with DecisionReply's two extra keys appended, not decoded and encoded again (hot path).
    extra = {
        "duplicate": result.status == "duplicate",
        "ignored_fields": accepted.ignored_fields,
        "accepted": result.status == "accepted",
    }
    extra = {key: value for key, value in extra.items() if value}
    if not extra:
        return result.body
    return result.body[:-1] + b"," + ENCODER.encode(extra)[1:]


def batch_result(index: int, checked: Accepted | Problem, result: WriteResult | None) -> BatchResult:
    if isinstance(checked, Problem):
        # A record refused for its tenant (auth.stamp) is forbidden, not invalid.
        return BatchResult(index, None, "forbidden" if checked.status == 403 else "invalid", error_of(checked))
    entry = BatchResult(index, checked.record.decision_id, "invalid", None, ignored_fields=checked.ignored_fields)
    assert result is not None
    status = result.status
    if status == "conflict":
        entry.error = error_of(FAILED["conflict"])
    elif status == "rejected":
        entry.error = error_of(Problem(422, result.body.decode()))
    elif status == "forbidden":
        entry.error = error_of(Problem(403, result.body.decode()))
    entry.status = cast(Any, status)
    return entry


def batch_reply(checked: list[Accepted | Problem], results: list[WriteResult]) -> tuple[BatchReply, int]:
    """Pair each record with its result; 200 when all stored, 207 when some failed, else their common status."""
    pending = iter(results)
    entries = [
        batch_result(index, item, next(pending) if isinstance(item, Accepted) else None)
        for index, item in enumerate(checked)
    ]
    created = sum(entry.status == "created" for entry in entries)
    duplicates = sum(entry.status == "duplicate" for entry in entries)
    failures = {entry.error.status for entry in entries if entry.error is not None}
    accepted = sum(entry.status == "accepted" for entry in entries)
    reply = BatchReply(entries, created, duplicates, len(entries) - created - duplicates - accepted, accepted=accepted)
    status = 202 if accepted else 200
    if failures:
        status = failures.pop() if len(failures) == 1 and not (created or duplicates or accepted) else 207
    if status >= 400:
        # The one error shape, so a client reading `error` needs no special case for batches.
        reply.detail, reply.status, reply.error = "no record in the batch was accepted", status, CODES[status]
    return reply, status


class Readiness(Struct):
    """`GET /readyz`: whether this instance should get traffic, and why not."""

    ready: bool
    store: str
    reason: str | None = None


class Whoami(Struct):
    """The calling token (never its secret) or signed-in person, and the tenant it sees; `authenticated` is false in
    open mode."""

    authenticated: bool
    token_id: str | None
    name: str | None
    scopes: list[str]
    tenant_id: str | None
    workspace_id: str | None
    # Decisions the token may create per UTC day, and how many it created today (as stored, at most
    # CAVRA_QUOTA_CACHE_S old); both null without a quota.
    daily_quota: int | None = None
    used_today: int | None = None
    # A person's cookie session (OpenID Connect sign-in): their email, else their subject; null for a token.
    person: str | None = None


class InclusionProof(Struct):
    """A decision's audit-log leaf index and RFC 9162 inclusion proof in the signed checkpoint of `tree_size`."""

    leaf_index: int
    tree_size: int
    inclusion: list[str]
    checkpoint: str


class ConsistencyProof(Struct):
    """An RFC 9162 consistency proof between two signed checkpoints."""

    first: int
    second: int
    consistency: list[str]


class EvidenceRecord(Struct):
    """One record of a session exactly as stored, with its inclusion proof."""

    leaf_index: int
    record: msgspec.Raw
    inclusion: list[str]


class Evidence(Struct):
    """A session's records, their proofs, the checkpoint, the signed manifest and the verifier key."""

    format: str
    session_id: str
    public_key: str
    checkpoint: str
    tree_size: int
    manifest: str
    records: list[EvidenceRecord]
    not_in_log: list[str]


class RejectionPage(Struct):
    """`GET /ingest/rejections`: oldest first; pass `next_after` back as `after` for the next page."""

    items: list[RejectionReply]
    next_after: int | None
