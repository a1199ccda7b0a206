"""Per-token daily record quotas: admission before a body is queued, against the usage the store keeps.

The stores add each token's created decisions to `token_usage (token_id, day, records)` in the transaction
that creates them (migration 015), so every server on one database counts the same records, duplicates
and refusals never count, and the count survives restarts. Admission reads that count (cached
`CAVRA_QUOTA_CACHE_S`) and adds what this server has in flight: a request that would take the token past
its quota is refused whole with 429 until the next UTC midnight. Other servers' records reach this one's
count within the cache time, or once committed when they are in flight: that much, and no more, may be
admitted beyond a quota (docs/limits.md says so).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cavra_ingest.core.errors import ApiError
from cavra_ingest.core.models import QuotaCharge
from cavra_ingest.store.tokens import TokenStore

log = logging.getLogger(__name__)
# Statuses of records that will be in the usage count: created here, or durable in JetStream for a worker.
COUNTED = frozenset({"created", "accepted"})


def utc_day(moment: datetime) -> str:
    """Name the UTC day a moment falls on, as the usage rows do (`YYYY-MM-DD`)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d")


def seconds_to_midnight(moment: datetime) -> int:
    """Whole seconds from a moment to the next UTC midnight, when every quota starts afresh (at least 1)."""
    moment = moment.astimezone(UTC)
    midnight = datetime(moment.year, moment.month, moment.day, tzinfo=UTC) + timedelta(days=1)
    return max(1, math.ceil((midnight - moment).total_seconds()))


@dataclass
class Usage:
    """One token's count on one day as this server knows it."""

    # The store's count at the last read, plus what this server's requests created since.
    stored: int = 0
    fresh_until: float = -math.inf
    # Records of admitted requests that have not finished yet.
    inflight: int = 0
    # Created while a read was running: the read may or may not include them, so they are added to what it
    # returns. At worst they are counted twice until the next read; never missed.
    reading: bool = False
    settled_during_read: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(frozen=True)
class Reservation:
    """Records a request may write against its token's quota, released when the request ends."""

    charge: QuotaCharge
    records: int


@dataclass
class Quotas:
    """This server's view of every quota-bound token's usage today."""

    tokens: TokenStore | None
    cache_s: float = 1.0
    clock: Callable[[], float] = time.monotonic
    # The wall clock that decides the UTC day; tests move it to the next day.
    wall: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    _usage: dict[tuple[str, str], Usage] = field(default_factory=dict)

    async def check(self, token_id: str | None, quota: int | None, records: int = 0) -> None:
        """Refresh the token's usage when its cache ran out; 429 when `records` more would exceed its quota.

        With 0 records this refuses a token whose quota is used up before its body is read.
        """
        if token_id is None or quota is None or self.tokens is None:
            return
        day = utc_day(self.wall())
        usage = await self._fresh(token_id, day)
        self._refuse_beyond(usage, quota, records)

    def reserve(self, token_id: str | None, quota: int | None, records: int) -> Reservation | None:
        """Hold `records` against the quota for the request (429 when they would exceed it); None: no quota."""
        if token_id is None or quota is None or self.tokens is None:
            return None
        day = utc_day(self.wall())
        usage = self._usage.get((token_id, day))
        if usage is None:
            # The day turned since `check` read the count: nothing read yet for the new day.
            usage = self._entry(token_id, day)
        self._refuse_beyond(usage, quota, records)
        usage.inflight += records
        return Reservation(QuotaCharge(token_id, day), records)

    def settle(self, reservation: Reservation | None, created: int) -> None:
        """Release a request's reservation, keeping the records it created in the count."""
        if reservation is None:
            return
        usage = self._usage.get((reservation.charge.token_id, reservation.charge.day))
        if usage is None:
            return
        usage.inflight -= reservation.records
        usage.stored += created
        if usage.reading:
            usage.settled_during_read += created

    async def used(self, token_id: str) -> int:
        """Return the records the token created today, as stored (read at most `cache_s` ago)."""
        return (await self._fresh(token_id, utc_day(self.wall()))).stored

    def _refuse_beyond(self, usage: Usage, quota: int, records: int) -> None:
        used = usage.stored + usage.inflight
        if used + records > quota or (records == 0 and used >= quota):
            asked = f"; this request holds {records}" if records else ""
            raise ApiError(
                429,
                f"this token's daily quota of {quota} records is used up for today ({used} so far{asked}); "
                "a batch that would exceed it is refused whole. The quota resets at 00:00 UTC",
                retry_after=seconds_to_midnight(self.wall()),
            )

    def _entry(self, token_id: str, day: str) -> Usage:
        key = (token_id, day)
        usage = self._usage.get(key)
        if usage is None:
            # Yesterday's entries are done with once nothing of theirs is in flight: memory stays one per token.
            for old in [k for k, u in self._usage.items() if k[1] != day and not u.inflight and not u.reading]:
                del self._usage[old]
            usage = self._usage[key] = Usage()
        return usage

    async def _fresh(self, token_id: str, day: str) -> Usage:
        usage = self._entry(token_id, day)
        if self.clock() < usage.fresh_until:
            return usage
        assert self.tokens is not None
        # One read per token at a time: the requests that arrive meanwhile wait for its answer.
        async with usage.lock:
            if self.clock() < usage.fresh_until:
                return usage
            usage.reading, usage.settled_during_read = True, 0
            try:
                stored = await self.tokens.usage(token_id, day)
            except Exception as exc:
                log.warning("could not read the usage of token %s: %s", token_id, type(exc).__name__)
                raise ApiError(503, "the token's daily usage could not be read; retry", retry_after=1) from None
            finally:
                usage.reading = False
            usage.stored = stored + usage.settled_during_read
            usage.fresh_until = self.clock() + self.cache_s
        return usage
