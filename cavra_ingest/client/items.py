"""What the client queues and counts: prepared decisions, the signal a batch waits on, and the stats."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec

from cavra_ingest.client.ids import new_decision_id

STORED = frozenset({"created", "duplicate"})


ENCODER = msgspec.json.Encoder()


@dataclass
class Stats:
    """Counters of what happened to the records given to `record()`."""

    recorded: int = 0
    created: int = 0
    duplicates: int = 0
    failed: int = 0
    dropped: int = 0
    spilled: int = 0
    blocked: int = 0
    requests: int = 0
    retries: int = 0
    failed_by_status: dict[int, int] = field(default_factory=dict)

    @property
    def stored(self) -> int:
        return self.created + self.duplicates


@dataclass(slots=True)
class Item:
    ticket: int
    seq: int | None
    decision_id: str
    body: bytes
    at: float


class Signal:
    """Wake every waiter on the next pulse; waiters re-check their own condition."""

    def __init__(self) -> None:
        self._future: asyncio.Future[None] | None = None

    def pulse(self) -> None:
        if self._future is not None and not self._future.done():
            self._future.set_result(None)
        self._future = None

    def wait(self) -> asyncio.Future[None]:
        """Return a future done at the next pulse; made at once, so no pulse between check and wait is lost."""
        if self._future is None:
            self._future = asyncio.get_running_loop().create_future()
        # Shielded so a waiter's timeout cancels only its own wait, not the shared future.
        return asyncio.shield(self._future)


def prepare(decision: Mapping[str, Any], stamp_time: bool = True) -> tuple[str, bytes]:
    """Name and date a decision client-side, so a resend is byte-identical: a duplicate, not a conflict."""
    record = dict(decision)
    if not record.get("decision_id"):
        record["decision_id"] = new_decision_id()
    if stamp_time and not record.get("timestamp"):
        record["timestamp"] = datetime.now(UTC).isoformat()
    return str(record["decision_id"]), ENCODER.encode(record)
