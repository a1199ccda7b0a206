"""What every transport writes through: one admission check, then commit and wait.

The batch writer (`workers/writer.py`) implements it; handlers and future consumers see only this.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from msgspec import Struct

from cavra_ingest.core.errors import Retryable
from cavra_ingest.core.models import Accepted, SessionIn

WriteItem = Accepted | SessionIn
# "accepted": durable in the JetStream log, committed by a worker shortly after (docs/scale-out.md).
Status = Literal["created", "duplicate", "conflict", "updated", "rejected", "forbidden", "accepted"]


@dataclass(frozen=True)
class WriteResult:
    """What became of one write item; `body` is the stored record's JSON (or, rejected, why)."""

    status: Status
    body: bytes


class Unavailable(Retryable):
    """Nothing was written and a retry may succeed: the queue is full, the store is locked, or we are stopping."""


class WriterStats(Struct):
    """Cumulative since start: the bench reads it before and after a run for the mean batch size."""

    transactions: int = 0
    records: int = 0
    failed_transactions: int = 0


class SearchHealth(Struct):
    """How far the background search indexer has come; rows it has not reached are found by reading them."""

    lag_rows: int
    # Seconds since the indexer was last caught up (0 when it is).
    lag_s: float
    # SQLite: the last rowid indexed.
    indexed_upto: int | None = None


class CountsHealth(Struct):
    """How far the background folder has come with a backlog of decisions the counts have not seen (a new or
    upgraded file, rows written straight into it); reads count those from the table meanwhile."""

    lag_rows: int
    # Seconds since the folder was last caught up (0 when it is).
    lag_s: float
    # SQLite: the last rowid counted.
    counted_upto: int | None = None


class SinkHealth(Struct):
    closing: bool
    queued_records: int
    queue_capacity: int
    stats: WriterStats


class Sink(Protocol):
    def admit(self, records: int) -> None:
        """Raise Unavailable unless `records` more records may be queued now."""
        ...

    async def commit(self, items: list[WriteItem]) -> list[WriteResult]:
        """Queue the items and wait until they are committed; Unavailable when nothing was written."""
        ...

    def health(self) -> SinkHealth: ...
