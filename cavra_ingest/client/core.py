"""The asyncio client: queue decisions, send them in NDJSON batches, retry what may be retried."""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import aiohttp
import msgspec

from cavra_ingest.client.items import STORED, Item, Signal, Stats, prepare
from cavra_ingest.client.retry import RETRYABLE, backoff_delay, parse_retry_after
from cavra_ingest.client.spool import Spool

log = logging.getLogger(__name__)

WhenFull = Literal["block", "drop", "spool"]
OnError = Callable[[dict[str, Any], int, dict[str, Any]], object]


class Client:
    """Send decisions in the background: `async with Client(url) as client: await client.record({...})`."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        spool: str | Path | None = None,
        batch_size: int = 500,
        batch_bytes: int = 1024 * 1024,
        max_age_s: float = 0.2,
        max_queue_records: int = 10_000,
        max_queue_bytes: int = 32 * 1024 * 1024,
        when_full: WhenFull = "block",
        concurrency: int = 2,
        backoff_base_s: float = 0.1,
        backoff_cap_s: float = 10.0,
        request_timeout_s: float = 30.0,
        close_timeout_s: float = 10.0,
        on_error: OnError | None = None,
        stamp_time: bool = True,
    ) -> None:
        if when_full not in ("block", "drop", "spool"):
            raise ValueError(f"when_full must be block, drop or spool, not {when_full!r}")
        if when_full == "spool" and spool is None:
            raise ValueError("when_full='spool' needs a spool file")
        self.url = base_url.rstrip("/") + "/decisions"
        self.token = token if token is not None else os.environ.get("CAVRA_TOKEN")
        self.spool_path = spool
        self.batch_size, self.batch_bytes, self.max_age_s = batch_size, batch_bytes, max_age_s
        self.max_queue_records, self.max_queue_bytes, self.when_full = max_queue_records, max_queue_bytes, when_full
        self.concurrency = concurrency
        self.backoff_base_s, self.backoff_cap_s = backoff_base_s, backoff_cap_s
        self.request_timeout_s, self.close_timeout_s = request_timeout_s, close_timeout_s
        self.on_error = on_error
        self.stamp_time = stamp_time
        self.stats = Stats()
        self._queue: deque[Item] = deque()
        self._queued_bytes = 0
        self.held_records = 0  # queued or in flight: what memory holds
        self.held_bytes = 0
        self._outstanding: list[int] = []  # a heap of tickets not yet answered for
        self._finished: set[int] = set()
        self._last_ticket = 0
        self._flushing = 0
        self._closing = False
        self._closed = False
        self._changed = Signal()
        # Spool state: rows above `_cursor` are on disk only while `_backlog` is set (see `_refill`).
        self._spool: Spool | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._backlog = False
        self._cursor = 0
        self._spills = 0
        self._direct = 0
        self._refilling = False
        self._http: aiohttp.ClientSession | None = None
        self._workers: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Client:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Open the spool (queueing what it holds to be resent) and start the senders."""
        headers = {"Content-Type": "application/x-ndjson"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        self._http = aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=self.request_timeout_s))
        if self.spool_path is not None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cavra-spool")
            self._spool = await self._on_spool(Spool, self.spool_path)
            count, top = await self._on_spool(self._spool.count)
            self._backlog, self._last_ticket = count > 0, top
        self._workers = [asyncio.create_task(self._work()) for _ in range(self.concurrency)]

    async def record(self, decision: Mapping[str, Any]) -> str | None:
        """Queue one decision and return its id (None if dropped); awaits only for the spool or a full queue."""
        if self._closing:
            raise RuntimeError("record() after close()")
        try:
            decision_id, body = prepare(decision, self.stamp_time)
        except (TypeError, ValueError, msgspec.EncodeError) as exc:
            self._report(dict(decision), 0, {"detail": f"not encodable as JSON: {exc}", "status": 0})
            return None
        self.stats.recorded += 1
        size = len(body)
        if self._spool is not None and self._backlog:
            return await self._spill(decision_id, body)
        if not self._has_room(size):
            if self.when_full == "drop":
                self.stats.recorded -= 1
                self.stats.dropped += 1
                return None
            if self.when_full == "spool":
                return await self._spill(decision_id, body)
            self.stats.blocked += 1
            while not self._has_room(size):
                if self._closing:
                    raise RuntimeError("record() still waiting for room at close()")
                await self._changed.wait()
        # Room is reserved before the spool write so concurrent callers cannot overfill the queue.
        self.held_records += 1
        self.held_bytes += size
        self._direct += 1
        try:
            seq = await self._on_spool(self._spool.add, decision_id, body) if self._spool is not None else None
        except BaseException:
            self.held_records -= 1
            self.held_bytes -= size
            raise
        finally:
            self._direct -= 1
        if seq is None:
            self._last_ticket += 1
            ticket = self._last_ticket
        else:
            ticket, self._last_ticket = seq, max(self._last_ticket, seq)
            self._cursor = max(self._cursor, seq)
        self._enqueue(Item(ticket, seq, decision_id, body, time.monotonic()))
        return decision_id

    async def flush(self) -> None:
        """Wait until every record given so far (and the spool's backlog) has been answered for."""
        target = self._last_ticket
        self._flushing += 1
        self._changed.pulse()
        try:
            while self._lowest_outstanding() <= target:
                await self._changed.wait()
        finally:
            self._flushing -= 1

    async def close(self) -> None:
        """Flush within `close_timeout_s`, then stop; what is unsent stays in the spool, if any."""
        if self._closed:
            return
        self._closing = True
        self._changed.pulse()
        try:
            await asyncio.wait_for(self.flush(), self.close_timeout_s)
        except TimeoutError:
            where = "kept in the spool" if self._spool is not None else "lost"
            log.warning("close: %d record(s) unanswered after %.1fs, %s", self.pending, self.close_timeout_s, where)
        self._closed = True
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
        if self._spool is not None:
            await self._on_spool(self._spool.close)
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    @property
    def pending(self) -> int:
        """Return how many records are neither acknowledged nor reported (the spool's backlog not counted)."""
        return self.held_records

    def _has_room(self, size: int) -> bool:
        if self.held_records == 0:
            return True  # one record larger than the byte cap must still go
        return self.held_records < self.max_queue_records and self.held_bytes + size <= self.max_queue_bytes

    async def _on_spool(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _spill(self, decision_id: str, body: bytes) -> str:
        assert self._spool is not None
        self._spills += 1
        self._backlog = True
        seq = await self._on_spool(self._spool.add, decision_id, body)
        self._last_ticket = max(self._last_ticket, seq)
        self.stats.spilled += 1
        self._changed.pulse()
        return decision_id

    def _enqueue(self, item: Item) -> None:
        self._queue.append(item)
        self._queued_bytes += len(item.body)
        heapq.heappush(self._outstanding, item.ticket)
        self._changed.pulse()

    def _lowest_outstanding(self) -> float:
        while self._outstanding and self._outstanding[0] in self._finished:
            self._finished.discard(heapq.heappop(self._outstanding))
        low: float = self._outstanding[0] if self._outstanding else math.inf
        return min(low, self._cursor + 1) if self._backlog else low

    async def _refill(self) -> None:
        """Move records from the spool's backlog into memory, oldest first, while there is room."""
        assert self._spool is not None
        room = min(self.max_queue_records - self.held_records, 2 * self.batch_size)
        # A direct record() still writing its row would be loaded twice; spills started after `spills`
        # may have missed this read, so the backlog ends only if none started.
        if room <= 0 or self._direct or self._refilling:
            return
        self._refilling = True
        try:
            while room > 0:
                spills = self._spills
                rows = await self._on_spool(self._spool.after, self._cursor, room)
                now = time.monotonic() - self.max_age_s  # already old: send at once
                for seq, decision_id, body in rows:
                    self.held_records += 1
                    self.held_bytes += len(body)
                    self._cursor = seq
                    self._enqueue(Item(seq, seq, decision_id, body, now))
                room -= len(rows)
                if room > 0 and self._spills == spills:
                    self._backlog = False
                    self._changed.pulse()
                    return
                # Otherwise a spill started during the read: read again (it is queued behind this one, so seen).
        finally:
            self._refilling = False

    def _ready(self) -> float | None:
        """Return 0 when a batch should go now, else how long until the oldest record is due (None: idle)."""
        if not self._queue:
            return None
        if (
            len(self._queue) >= self.batch_size
            or self._queued_bytes >= self.batch_bytes
            or self._flushing
            or self._closing
            or self.held_records >= self.max_queue_records
        ):
            return 0.0
        return max(0.0, self._queue[0].at + self.max_age_s - time.monotonic())

    async def _next_batch(self) -> list[Item] | None:
        while True:
            if self._backlog and self.held_records < self.max_queue_records:
                await self._refill()
            wait = self._ready()
            if wait == 0.0:
                return self._take()
            if wait is None and self._closing and not self._backlog:
                return None
            try:
                await asyncio.wait_for(self._changed.wait(), wait)
            except TimeoutError:
                pass

    def _take(self) -> list[Item]:
        batch: list[Item] = []
        size = 0
        while self._queue and len(batch) < self.batch_size:
            item = self._queue[0]
            if batch and size + len(item.body) > self.batch_bytes:
                break
            batch.append(self._queue.popleft())
            size += len(item.body)
        self._queued_bytes -= size
        return batch

    async def _work(self) -> None:
        while (batch := await self._next_batch()) is not None:
            try:
                await self._send(batch)
            except Exception as exc:
                # A bug or a failing spool must not stop the sender, or flush() would wait forever.
                log.exception("sending a batch failed")
                for item in batch:
                    self._report_item(item, 0, {"detail": f"client error: {exc!r}", "status": 0})
                self._release(batch)

    async def _send(self, batch: list[Item]) -> None:
        """Post one batch until it gets an answer that is not worth retrying, then settle it."""
        assert self._http is not None
        body = b"\n".join(item.body for item in batch)
        attempt = 0
        while True:
            self.stats.requests += 1
            retry_after = None
            try:
                async with self._http.post(self.url, data=body) as response:
                    status, payload = response.status, await response.read()
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
            except (aiohttp.ClientError, TimeoutError) as exc:
                # No answer: the batch may or may not be stored; the resend's duplicates say which.
                log.debug("POST %s failed: %r", self.url, exc)
                status, payload = 0, b""
            if status and status not in RETRYABLE:
                break
            attempt += 1
            self.stats.retries += 1
            await asyncio.sleep(backoff_delay(attempt, self.backoff_base_s, self.backoff_cap_s, retry_after))
        await self._settle(batch, status, payload)

    async def _settle(self, batch: list[Item], status: int, payload: bytes) -> None:
        try:
            answer = msgspec.json.decode(payload) if payload else None
        except msgspec.DecodeError:
            answer = {"detail": payload[:500].decode(errors="replace"), "status": status}
        results = answer.get("results") if isinstance(answer, dict) else None
        if isinstance(results, list) and len(results) == len(batch):
            for item, entry in zip(batch, results, strict=True):
                if entry.get("status") in STORED:
                    self._count_stored(entry["status"])
                else:
                    error = entry.get("error") or {"detail": entry.get("status"), "status": status}
                    self._report_item(item, int(error.get("status") or status), error)
        elif status == 200:
            for _ in batch:
                self._count_stored("created")
        else:
            error = answer if isinstance(answer, dict) else {"detail": f"HTTP {status}", "status": status}
            for item in batch:
                self._report_item(item, status, error)
        seqs = [item.seq for item in batch if item.seq is not None]
        if seqs and self._spool is not None:
            # Deleted only now: a crash before this line resends the batch, and the server says duplicate.
            await self._on_spool(self._spool.remove, seqs)
        self._release(batch)

    def _release(self, batch: list[Item]) -> None:
        for item in batch:
            self.held_records -= 1
            self.held_bytes -= len(item.body)
            self._finished.add(item.ticket)
        self._changed.pulse()

    def _count_stored(self, status: str) -> None:
        if status == "created":
            self.stats.created += 1
        else:
            self.stats.duplicates += 1

    def _report_item(self, item: Item, status: int, error: dict[str, Any]) -> None:
        try:
            record = msgspec.json.decode(item.body)
        except msgspec.DecodeError:
            record = {"decision_id": item.decision_id}
        self._report(record, status, error)

    def _report(self, record: dict[str, Any], status: int, error: dict[str, Any]) -> None:
        """Count a failure and tell the callback; nothing reaches the agent's code path."""
        self.stats.failed += 1
        self.stats.failed_by_status[status] = self.stats.failed_by_status.get(status, 0) + 1
        if self.on_error is None:
            log.warning("decision %s not stored: %s %s", record.get("decision_id"), status, error.get("detail"))
            return
        try:
            self.on_error(record, status, error)
        except Exception:
            log.exception("on_error callback failed")
