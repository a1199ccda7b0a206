"""Delivery to sinks: each active sink follows the committed decisions after its cursor, at least once.

One supervisor per process takes a lease per sink in the store (so with two replicas each sink has one
deliverer), starts a loop for each sink it holds and stops loops of sinks paused, changed or removed. A
loop reads a batch through the store's read path (never the writer), sends the matches, and only then
advances the cursor: a crash re-sends at most that one batch. Retries back off exponentially with jitter;
what the receiver refuses for good goes to the dead letters and the stream goes on. A sink that follows the
access events too (`events`) reads them the same way in the same loop, after a cursor of their own.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from cavra_ingest.core.sinks import SinkDef
from cavra_ingest.settings import SinkSettings
from cavra_ingest.store.sinks import Position, SinkTables
from workers.accessevents import ACCESS
from workers.senders import Event, Refused, Retry, Sender, brief_fields, make_sender

log = logging.getLogger(__name__)
# None: the sink takes every record (no filter, no tenant), so records need not be decoded whole.
Matcher = Callable[[dict[str, Any]], bool] | None
STOP_WAIT_S = 5.0


class LeaseLost(Exception):
    """Another process holds the sink now: this loop ends without advancing anything."""


@dataclass
class SinkStats:
    """What /metrics and /healthz show of a sink, kept by whichever loop or look last saw it."""

    delivered: int = 0
    failed: int = 0
    dead_lettered: int = 0
    lag_records: int = 0
    # Monotonic time since which the sink has been behind (None: caught up).
    behind_since: float | None = None
    last_success: float | None = None
    held: bool = False

    @property
    def lag_s(self) -> float:
        return 0.0 if self.behind_since is None else round(time.monotonic() - self.behind_since, 3)


@dataclass
class Run:
    sink: SinkDef
    task: asyncio.Task[None] | None = None
    sender: Sender | None = None
    renewed: float = field(default_factory=time.monotonic)
    lag: int = 0
    lag_at: float = 0.0

    @property
    def decisions(self) -> bool:
        return "decisions" in self.sink.events


class Delivery:
    """The supervisor and its per-sink loops; `stop` cancels and awaits every task within a bound."""

    def __init__(
        self,
        tables: SinkTables,
        settings: SinkSettings,
        compile_filter: Callable[[SinkDef], Matcher],
        *,
        deliver: bool = True,
        on_active: Callable[[], None] | None = None,
    ) -> None:
        self.tables = tables
        # False: only watch (the server's view for /metrics and /healthz while a child process delivers).
        self.deliver = deliver
        # Called at each look that finds an active sink (serve starts its delivery child then, not before).
        self.on_active = on_active
        self.settings = settings
        self.compile_filter = compile_filter
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.runs: dict[str, Run] = {}
        self.stats: dict[str, SinkStats] = {}
        self._stop = asyncio.Event()
        self._poke = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name="cavra-sink-supervisor")

    def poke(self) -> None:
        """Look at the sinks now (one was added, changed or removed)."""
        self._poke.set()

    async def stop(self) -> None:
        self._stop.set()
        tasks = [t for t in [self._task, *(run.task for run in self.runs.values())] if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_WAIT_S)
        for name, run in list(self.runs.items()):
            await self._end(name, run)

    async def _end(self, name: str, run: Run) -> None:
        self.runs.pop(name, None)
        if run.sender is not None:
            try:
                await asyncio.wait_for(run.sender.close(), 2)
            except Exception:
                log.warning("sink %s: closing its sender failed", name)
        try:
            await asyncio.wait_for(self.tables.free_lease(name, self.holder), 2)
        except Exception:
            log.warning("sink %s: freeing its lease failed (it expires by itself)", name)
        if name in self.stats:
            self.stats[name].held = False

    async def _wait(self, seconds: float, event: asyncio.Event | None = None) -> None:
        waiters = [asyncio.ensure_future(self._stop.wait())]
        if event is not None:
            waiters.append(asyncio.ensure_future(event.wait()))
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _supervise(self) -> None:
        interval = max(min(self.settings.sink_lease_s / 3, 1.0), 0.05)
        while not self._stop.is_set():
            self._poke.clear()
            try:
                await self._look()
            except Exception:
                log.exception("the sink supervisor's look failed; trying again")
            await self._wait(interval, self._poke)

    async def _look(self) -> None:
        sinks = {sink.name: sink for sink in await self.tables.all()}
        if self.on_active is not None and any(sink.state == "active" for sink in sinks.values()):
            self.on_active()
        for name, run in list(self.runs.items()):
            now = sinks.get(name)
            done = run.task is not None and run.task.done()
            if done or now is None or now.state != "active" or now != run.sink:
                if run.task is not None and not done:
                    run.task.cancel()
                    await asyncio.wait([run.task], timeout=STOP_WAIT_S)
                await self._end(name, run)
        for name in list(self.stats):
            if name not in sinks:
                del self.stats[name]
        for name, sink in sinks.items():
            stats = self.stats.setdefault(name, SinkStats())
            if self.deliver and sink.state == "active" and name not in self.runs and not self._stop.is_set():
                if await self.tables.take_lease(name, self.holder, self.settings.sink_lease_s):
                    run = Run(sink)
                    self.runs[name] = run
                    stats.held = True
                    run.task = asyncio.create_task(self._follow(run), name=f"cavra-sink-{name}")
            if name not in self.runs:
                await self._refresh(name, stats)

    async def _refresh(self, name: str, stats: SinkStats) -> None:
        """Lag and counts of a sink another process delivers (or nobody: it is paused)."""
        cursor = await self.tables.cursor(name)
        if cursor is None:
            return
        position, stats.delivered, stats.failed, _, stats.last_success, caught_up = cursor
        stats.lag_records = await self.tables.lag(position)
        behind = time.time() - caught_up if stats.lag_records and caught_up else None
        stats.behind_since = None if behind is None else time.monotonic() - behind
        stats.dead_lettered = await self.tables.dead_count(name)

    async def _lag(self, run: Run, position: Position) -> int:
        # Counted at most once a second per sink: under load the count would cost more than it tells.
        now = time.monotonic()
        if now - run.lag_at >= 1.0:
            run.lag_at = now
            run.lag = await self.tables.lag(position)
        return run.lag

    async def _renew(self, run: Run) -> None:
        if time.monotonic() - run.renewed < self.settings.sink_lease_s / 3:
            return
        if not await self.tables.take_lease(run.sink.name, self.holder, self.settings.sink_lease_s):
            raise LeaseLost(run.sink.name)
        run.renewed = time.monotonic()

    async def _follow(self, run: Run) -> None:
        name = run.sink.name
        stats = self.stats.setdefault(name, SinkStats(held=True))
        try:
            matches = self.compile_filter(run.sink)
            secret = await self.tables.secret(name)
            run.sender = make_sender(run.sink, secret, self.settings.sink_timeout_s)
            cursor = await self.tables.cursor(name)
            if cursor is None:
                return
            position: Position = cursor[0]
            stats.delivered, stats.failed = cursor[1], cursor[2]
            stats.dead_lettered = await self.tables.dead_count(name)
            access_cursor = await self.tables.access_cursor(name) if "access" in run.sink.events else None
            access = None if access_cursor is None else access_cursor[0]
            while not self._stop.is_set():
                await self._renew(run)
                more_access = False
                if access is not None:
                    access, more_access = await self._follow_access(run, access, stats)
                rows = await self.tables.read_after(position, self.settings.sink_batch_max) if run.decisions else []
                if not rows:
                    if stats.behind_since is not None:
                        await self.tables.mark_caught_up(name)
                    stats.lag_records, stats.behind_since = 0, None
                    if not more_access:
                        await self._wait(self.settings.sink_batch_ms / 1000)
                    continue
                if stats.behind_since is None:
                    stats.behind_since = time.monotonic()
                stats.lag_records = await self._lag(run, position)
                events = []
                for row_position, payload in rows:
                    if matches is None:
                        events.append(Event(row_position, brief_fields(payload), payload))
                        continue
                    fields = msgspec.json.decode(payload)
                    if isinstance(fields, dict) and matches(fields):
                        events.append(Event(row_position, fields, payload))
                sent = await self._deliver(run, events, stats) if events else 0
                position = rows[-1][0]
                full = len(rows) == self.settings.sink_batch_max
                await self.tables.advance(name, position, sent, caught_up=not full)
                stats.delivered += sent
                if sent:
                    stats.last_success = time.time()
                stats.lag_records = await self._lag(run, position) if full else 0
                if not full:
                    stats.behind_since = None
        except LeaseLost:
            log.info("sink %s: another process holds its lease now", name)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("sink %s: delivery loop failed; the supervisor restarts it", name)

    async def _follow_access(self, run: Run, position: Position, stats: SinkStats) -> tuple[Position, bool]:
        """Deliver one batch of access events after `position`, then advance their cursor (as decisions', at
        least once); return the new position and whether a full batch was read (more may wait)."""
        limit, tenant = self.settings.sink_batch_max, run.sink.tenant_id
        rows = await self.tables.read_access_after(position, limit, tenant)
        if not rows:
            return position, False
        events = []
        for row_position, payload in rows:
            fields = msgspec.json.decode(payload)
            # The statement names the tenant already; checked again so nothing can ever widen it.
            if tenant is None or fields.get("tenant_id") == tenant:
                events.append(Event(row_position, fields, payload, ACCESS))
        sent = await self._deliver(run, events, stats) if events else 0
        await self.tables.advance_access(run.sink.name, rows[-1][0], sent)
        if sent:
            stats.last_success = time.time()
        return rows[-1][0], len(rows) == limit

    async def _deliver(self, run: Run, events: Sequence[Event], stats: SinkStats) -> int:
        """Send the events; return how many the receiver took. Refused ones are dead-lettered one by one."""
        assert run.sender is not None
        pending: list[Sequence[Event]] = [events]
        delivered = 0
        while pending:
            batch = pending.pop(0)
            attempts = 0
            while True:
                await self._renew(run)
                try:
                    await run.sender.send(batch)
                    delivered += len(batch)
                    break
                except Refused as exc:
                    attempts += 1
                    if len(batch) > 1:
                        # Find the poisoned event by halves; the others are delivered.
                        half = len(batch) // 2
                        pending[:0] = [batch[:half], batch[half:]]
                        break
                    await self._bury(run, batch[0], str(exc), attempts, stats)
                    break
                except Retry as exc:
                    attempts += 1
                    stats.failed += 1
                    await self.tables.failed(run.sink.name, str(exc))
                    limit = self.settings.sink_max_attempts
                    if limit and attempts >= limit:
                        if len(batch) > 1:
                            half = len(batch) // 2
                            pending[:0] = [batch[:half], batch[half:]]
                        else:
                            await self._bury(run, batch[0], f"{exc} ({attempts} attempts)", attempts, stats)
                        break
                    delay = self.backoff(attempts, exc.after_s)
                    log.warning("sink %s: %s; retrying in %.2f s", run.sink.name, exc, delay)
                    # Slept in pieces, the lease renewed between them: a long backoff never lets it lapse.
                    until = time.monotonic() + delay
                    while (left := until - time.monotonic()) > 0:
                        await self._wait(min(left, self.settings.sink_lease_s / 3))
                        if self._stop.is_set():
                            raise asyncio.CancelledError from None
                        await self._renew(run)
        return delivered

    def backoff(self, attempts: int, after_s: float | None) -> float:
        """Exponential with full jitter in its upper half; a Retry-After is honoured up to the cap."""
        cap = self.settings.sink_backoff_max_s
        delay = min(self.settings.sink_backoff_s * 2 ** (attempts - 1), cap) * random.uniform(0.5, 1.0)
        if after_s is not None:
            delay = max(delay, min(after_s, cap))
        return delay

    async def _bury(self, run: Run, event: Event, error: str, attempts: int, stats: SinkStats) -> None:
        access = event.stream == ACCESS
        event_id = str(event.fields.get("id" if access else "decision_id", ""))
        await self.tables.add_dead(run.sink.name, [(event_id, event.payload, error, attempts)], event.stream)
        stats.dead_lettered += 1
        what = "access event" if access else "decision"
        log.warning("sink %s: %s %s dead-lettered: %s", run.sink.name, what, event_id, error)


async def replay(tables: SinkTables, sink: SinkDef, settings: SinkSettings, limit: int = 200) -> tuple[int, int]:
    """Send a sink's dead letters once more, oldest first; return (delivered, still dead)."""
    taken = await tables.take_dead(sink.name, limit)
    sender = make_sender(sink, await tables.secret(sink.name), settings.sink_timeout_s)
    delivered: list[int] = []
    try:
        for dead_id, payload, stream in taken:
            fields = msgspec.json.decode(payload)
            try:
                await sender.send([Event((-1, dead_id), fields, payload, stream)])
            except Refused:
                continue
            except Retry:
                break  # the receiver is down or busy: the rest stay dead, for a later replay
            delivered.append(dead_id)
    finally:
        await sender.close()
    await tables.drop_dead(sink.name, delivered)
    return len(delivered), await tables.dead_count(sink.name)
