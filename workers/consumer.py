"""`cavra-ingest worker`: commit the JetStream log to PostgreSQL, acknowledging messages only after COMMIT.

Every worker binds the one durable pull consumer, so several share the partitions. A batch of messages is one
store transaction (`store.write`: planning, summaries, the audit queue); a worker killed before its
acknowledgements leaves the messages to be redelivered, and `decision_id` idempotency makes the replay
duplicates, so nothing is lost and nothing counted twice.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from cavra_ingest.auditlog.log import audit_log
from cavra_ingest.broker.jetstream import (
    DEAD_LETTER_SUBJECT,
    DURABLE,
    ENVELOPE_DECODER,
    STREAM,
    SUBJECT_PREFIX,
    Rejection,
    connect,
)
from cavra_ingest.core.models import Accepted, now_text
from cavra_ingest.core.sink import WriteItem, WriteResult
from cavra_ingest.settings import Settings
from cavra_ingest.store import Store, StoreUnavailable, make_store
from cavra_ingest.store.base import KeepsRejections

log = logging.getLogger(__name__)

# What a client is told about a refusal: never the other record's content or owner.
DETAILS = {
    "conflict": "decision_id is already stored with different content",
}
# Store faults that may clear: wait this long (doubling up to the cap) before the messages come back.
RETRY_FIRST_S, RETRY_MAX_S = 0.5, 5.0
# Fetches that fail (not time out) in a row before the consumer is bound again.
REBIND_AFTER_FAILURES = 3
T = TypeVar("T")


@dataclass
class Delivery:
    """One fetched message and the records it carries."""

    msg: Any
    seq: int
    items: list[Accepted] = field(default_factory=list)


@dataclass
class WorkerStats:
    batches: int = 0
    records: int = 0
    rejections: int = 0
    retries: int = 0


class Worker:
    """Fetch, commit, record rejections, acknowledge; until stopped."""

    def __init__(self, settings: Settings, store: Store, nc: Any) -> None:
        self.settings = settings
        self.store = store
        self.stats = WorkerStats()
        self.stopping = asyncio.Event()
        self._retry_s = RETRY_FIRST_S
        if nc is not None:
            self.attach(nc)

    def attach(self, nc: Any) -> None:
        self.nc = nc
        self.js = nc.jetstream(timeout=self.settings.broker.broker_timeout_s)

    async def subscribe(self) -> Any:
        """Bind the durable consumer (creating it when missing) on a fresh inbox."""
        from nats.js.api import AckPolicy, ConsumerConfig

        config = ConsumerConfig(
            durable_name=DURABLE,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.settings.broker.worker_ack_wait_s,
            max_deliver=-1,
            max_ack_pending=-1,
            num_replicas=self.settings.broker.stream_replicas,
        )
        return await self.js.pull_subscribe(f"{SUBJECT_PREFIX}.*", durable=DURABLE, stream=STREAM, config=config)

    async def until_stopped(self, work: Awaitable[T]) -> T | None:
        """`work`'s result, or None once the worker is told to stop first (the work is then cancelled)."""
        task = asyncio.ensure_future(work)
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return None
        return task.result()

    async def bind(self, what: str, step: Callable[[], Awaitable[T]]) -> T | None:
        """Run `step` until it succeeds or the worker is stopped. A cluster that was restarted whole (a power
        cut) answers only once its stream and consumer have elected leaders, which can take longer than any
        one request's timeout; a worker that gave up there left the stream undrained."""
        import nats.errors

        delay = RETRY_FIRST_S
        while not self.stopping.is_set():
            try:
                return await self.until_stopped(step())
            except (nats.errors.Error, TimeoutError, OSError) as exc:
                log.warning("waiting for the JetStream log (%s): %r; again in %.1fs", what, exc, delay)
            await self.until_stopped(asyncio.sleep(delay))
            delay = min(delay * 2, RETRY_MAX_S)
        return None

    async def run(self) -> None:
        import nats.errors

        subscription = await self.bind("consumer", self.subscribe)
        if subscription is None:
            return
        log.info("worker consuming %s as %s", STREAM, DURABLE)
        failures = 0
        while not self.stopping.is_set():
            if self.settings.broker.worker_heartbeat_file:
                Path(self.settings.broker.worker_heartbeat_file).touch()
            try:
                msgs = await subscription.fetch(self.settings.broker.worker_batch_messages, timeout=1.0)
            except (nats.errors.TimeoutError, TimeoutError):
                continue
            except nats.errors.Error as exc:
                failures += 1
                log.warning("fetch failed: %r", exc)
                await self.until_stopped(asyncio.sleep(RETRY_FIRST_S))
                if failures >= REBIND_AFTER_FAILURES:
                    # The consumer may be gone (lost with its state in a cut, deleted) or bound to a stale inbox:
                    # bind again, creating it when missing. Its pending messages are redelivered to the new one.
                    log.warning("%d fetches failed in a row; binding the consumer again", failures)
                    await asyncio.gather(subscription.unsubscribe(), return_exceptions=True)
                    subscription = await self.bind("consumer", self.subscribe)
                    if subscription is None:
                        return
                    failures = 0
                continue
            failures = 0
            await self.handle(msgs)

    async def handle(self, msgs: list[Any]) -> None:
        """Commit one fetched batch, then acknowledge it; on a store fault hand it back for later."""
        deliveries = []
        for msg in msgs:
            delivery = Delivery(msg, msg.metadata.sequence.stream)
            try:
                delivery.items = ENVELOPE_DECODER.decode(msg.data).items
            except msgspec.MsgspecError:
                # Not ours (a stray publish on the subject): nothing to store, never redelivered.
                log.error("message %d is not a record envelope; terminated", delivery.seq)
                await msg.term()
                continue
            deliveries.append(delivery)
        if not deliveries:
            return
        try:
            results = await self.commit(deliveries)
        except StoreUnavailable as exc:
            self.stats.retries += 1
            log.warning("store unavailable, %d message(s) back in %.1fs: %s", len(deliveries), self._retry_s, exc)
            await asyncio.gather(*(d.msg.nak(delay=self._retry_s) for d in deliveries), return_exceptions=True)
            await asyncio.sleep(self._retry_s)
            self._retry_s = min(self._retry_s * 2, RETRY_MAX_S)
            return
        self._retry_s = RETRY_FIRST_S
        try:
            await self.reject(deliveries, results)
        except Exception as exc:
            # Committed, but its refusals not recorded: redelivered, the batch is all duplicates and the
            # refusals are found and recorded again.
            log.warning("recording rejections failed, %d message(s) back: %s", len(deliveries), exc)
            await asyncio.gather(*(d.msg.nak(delay=self._retry_s) for d in deliveries), return_exceptions=True)
            return
        # Only now: what was acknowledged is committed. A lost ack means a redelivery, stored as duplicates.
        await asyncio.gather(*(d.msg.ack() for d in deliveries))
        self.stats.batches += 1
        self.stats.records += len(results)

    async def commit(self, deliveries: list[Delivery]) -> list[WriteResult]:
        items: list[WriteItem] = [item for d in deliveries for item in d.items]
        try:
            return await self.store.write(items)
        except StoreUnavailable:
            raise
        except Exception:
            # One record the database can never take must not hold back the others: each message alone,
            # then each record alone, as the embedded writer isolates.
            log.exception("batch of %d records failed; retrying its records alone", len(items))
        results: list[WriteResult] = []
        for item in items:
            try:
                results.extend(await self.store.write([item]))
            except StoreUnavailable:
                raise
            except Exception as exc:
                results.append(WriteResult("rejected", f"record could not be stored: {exc}".encode()))
        return results

    async def reject(self, deliveries: list[Delivery], results: list[WriteResult]) -> None:
        """Record what the database refused, before the acknowledgement (a redelivery records it once)."""
        keyed: list[tuple[int, int, Rejection]] = []
        outcomes = iter(results)
        for d in deliveries:
            for index, item in enumerate(d.items):
                result = next(outcomes)
                if result.status in ("created", "duplicate"):
                    continue
                detail = DETAILS.get(result.status) or result.body.decode(errors="replace")
                r = item.record
                keyed.append((d.seq, index, Rejection(r.decision_id, r.session_id, r.tenant_id, result.status,
                                                      detail, now_text())))  # fmt: skip
        if not keyed:
            return
        self.stats.rejections += len(keyed)
        if isinstance(self.store, KeepsRejections):
            await self.store.add_rejections(keyed)
        for _, _, rejection in keyed:
            try:
                await self.js.publish(DEAD_LETTER_SUBJECT, msgspec.json.encode(rejection))
            except Exception as exc:
                # The table keeps it; the subject is for live subscribers.
                log.warning("dead-letter publish failed: %s", exc)
                break


async def run_worker(settings: Settings, ready: asyncio.Event | None = None) -> WorkerStats:
    """Open the store (migrating it), run the audit sequencer beside, consume until SIGTERM or SIGINT."""
    store = make_store(settings)
    await store.open()
    try:
        async with audit_log(settings, store):
            worker = Worker(settings, store, None)
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, worker.stopping.set)
            started = time.monotonic()
            nc = await worker.bind("streams", lambda: connect(settings))
            if nc is None:
                return worker.stats
            worker.attach(nc)
            try:
                if ready is not None:
                    ready.set()
                await worker.run()
            finally:
                # Not drain(): a pull subscription's drain waits out its pending fetch; what is unacknowledged
                # is redelivered anyway.
                await nc.close()
                log.info(
                    "worker stopped after %.0fs: %d batches, %d records, %d rejected, %d retries",
                    time.monotonic() - started,
                    worker.stats.batches,
                    worker.stats.records,
                    worker.stats.rejections,
                    worker.stats.retries,
                )
            return worker.stats
    finally:
        await store.close()


def main(settings: Settings) -> int:
    """Run a worker process until SIGTERM; 2 when the settings cannot make one."""
    if not settings.broker.broker_url or settings.store.kind != "postgres":
        print("cavra-ingest worker: needs CAVRA_BROKER_URL (nats://...) and CAVRA_ACTIVITY_DB=postgresql://...")
        return 2
    asyncio.run(run_worker(settings))
    return 0
