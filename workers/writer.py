"""The batch writer: commits whatever is queued as one transaction, then answers."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cavra_ingest.core.sink import SinkHealth, Unavailable, WriteItem, WriteResult, WriterStats
from cavra_ingest.settings import WriterSettings
from cavra_ingest.store import Store, StoreUnavailable

log = logging.getLogger(__name__)


class WriterClosed(Unavailable):
    """The writer is shutting down and takes no more work."""


@dataclass(eq=False)
class Job:
    """One request's records and the future its handler awaits."""

    items: list[WriteItem]
    future: asyncio.Future[list[WriteResult]]


@dataclass(eq=False)
class BatchWriter:
    """Group commit: one transaction per batch, futures resolved only after COMMIT. Implements `Sink`."""

    store: Store
    settings: WriterSettings = field(default_factory=WriterSettings)
    stats: WriterStats = field(default_factory=WriterStats)
    # Called after each transaction attempt with (records, seconds, failed): metrics live outside the writer.
    observers: list[Callable[[int, float, bool], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.pending_records = 0
        self.closing = False
        # Every job holds at least one record, so the record cap bounds the queue; +1 for the stop sentinel.
        self._queue: asyncio.Queue[Job | None] = asyncio.Queue(maxsize=self.settings.queue_max_records + 1)
        self._task: asyncio.Task[None] | None = None
        self._stopping: asyncio.Future[None] | None = None

    def start(self) -> None:
        """Run the writer loop as a task on the current event loop."""
        self._task = asyncio.create_task(self._run(), name="cavra-batch-writer")

    def admit(self, records: int) -> None:
        """Refuse at once when closing or when `records` more would overfill the queue."""
        if self.closing:
            raise WriterClosed("server is shutting down; retry later")
        if self.pending_records + max(records, 1) > self.settings.queue_max_records:
            raise Unavailable("ingest queue is full; retry later")

    def submit(self, items: list[WriteItem]) -> asyncio.Future[list[WriteResult]]:
        """Queue a request's records, or refuse at once when full or closing."""
        self.admit(len(items))
        future: asyncio.Future[list[WriteResult]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(Job(items, future))
        self.pending_records += len(items)
        return future

    async def commit(self, items: list[WriteItem]) -> list[WriteResult]:
        """Queue the items and wait for their results; Unavailable when nothing of them was written."""
        future = self.submit(items)
        try:
            return await future
        except StoreUnavailable as exc:
            raise Unavailable(f"store unavailable, nothing was written: {exc}") from exc
        except WriterClosed:
            raise WriterClosed("server is shutting down; nothing was written") from None

    def health(self) -> SinkHealth:
        return SinkHealth(self.closing, self.pending_records, self.settings.queue_max_records, self.stats)

    async def drain(self) -> None:
        """Wait until everything queued so far is committed (or has failed)."""
        await self._queue.join()

    def begin_stop(self) -> asyncio.Future[None]:
        """Start stopping, once: the drain deadline counts from the first call."""
        if self._stopping is None:
            self.closing = True
            self._stopping = asyncio.ensure_future(self._stop())
        return self._stopping

    async def stop(self) -> None:
        """Refuse new work, commit what is queued within the deadline, then stop."""
        await asyncio.shield(self.begin_stop())

    async def _stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._queue.put_nowait(None)
        try:
            await asyncio.wait_for(asyncio.shield(task), self.settings.drain_deadline_s)
        except TimeoutError:
            log.error("writer did not drain within %.1fs; cancelling", self.settings.drain_deadline_s)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        # Anything still queued was never committed: its clients get a retryable error.
        while not self._queue.empty():
            job = self._queue.get_nowait()
            if job is not None:
                self._fail(job, WriterClosed())
            self._queue.task_done()

    async def _run(self) -> None:
        while True:
            job = await self._queue.get()
            if job is None:
                self._queue.task_done()
                return
            batch, stop = await self._gather(job)
            try:
                await self._commit(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()
            if stop:
                self._queue.task_done()
                return

    async def _gather(self, first: Job) -> tuple[list[Job], bool]:
        # Take whatever is already queued: under load batches form by themselves.
        batch, count = [first], len(first.items)
        deadline = time.monotonic() + self.settings.batch_max_wait_ms / 1000
        while count < self.settings.commit_max_records:
            try:
                job = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            if job is None:
                return batch, True
            batch.append(job)
            count += len(job.items)
        return batch, False

    async def _commit(self, jobs: list[Job]) -> None:
        items = [item for job in jobs for item in job.items]
        started = time.perf_counter()
        try:
            results = await self.store.write(items)
        except asyncio.CancelledError:
            # Cancelled past the drain deadline: the store rolled back, so nothing here is acknowledged.
            for job in jobs:
                self._fail(job, WriterClosed())
            raise
        except StoreUnavailable as exc:
            self.stats.failed_transactions += 1
            self._observe(len(items), started, failed=True)
            log.warning("batch of %d records rolled back: %s", len(items), exc)
            for job in jobs:
                self._fail(job, exc)
            return
        except Exception:
            self.stats.failed_transactions += 1
            self._observe(len(items), started, failed=True)
            log.exception("batch of %d records failed; retrying its parts alone", len(items))
            await self._isolate(jobs)
            return
        self.stats.transactions += 1
        self.stats.records += len(items)
        self._observe(len(items), started, failed=False)
        start = 0
        for job in jobs:
            end = start + len(job.items)
            self._resolve(job, results[start:end])
            start = end

    async def _isolate(self, jobs: list[Job]) -> None:
        # A record that can never be written must not take the records beside it down with it.
        if len(jobs) > 1:
            for job in jobs:
                await self._commit([job])
            return
        job = jobs[0]
        results: list[WriteResult] = []
        for item in job.items:
            try:
                results.extend(await self.store.write([item]))
            except StoreUnavailable as exc:
                self._fail(job, exc)
                return
            except Exception as exc:
                log.exception("record could not be stored")
                results.append(WriteResult("rejected", f"record could not be stored: {exc}".encode()))
        self._resolve(job, results)

    def _observe(self, records: int, started: float, *, failed: bool) -> None:
        seconds = time.perf_counter() - started
        for observer in self.observers:
            try:
                observer(records, seconds, failed)
            except Exception:
                log.exception("writer observer failed")

    def _resolve(self, job: Job, results: list[WriteResult]) -> None:
        self.pending_records -= len(job.items)
        if not job.future.done():
            job.future.set_result(results)

    def _fail(self, job: Job, exc: BaseException) -> None:
        self.pending_records -= len(job.items)
        if not job.future.done():
            job.future.set_exception(exc)
