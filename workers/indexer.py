"""The search indexer: follows the decisions table by rowid and indexes new rows for `q` in large batches."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from cavra_ingest.sink import SearchHealth

log = logging.getLogger(__name__)

# Indexes up to N rows; returns the rows still waiting and, where the store has one, its position (rowid).
IndexStep = Callable[[int], Awaitable[tuple[int, int | None]]]


class SearchIndexer:
    """Index what is new, batch after batch until caught up, then look again after `interval_s`."""

    def __init__(self, step: IndexStep, *, batch_rows: int, interval_s: float) -> None:
        self.step = step
        self.batch_rows = batch_rows
        self.interval_s = interval_s
        self.pending = 0
        self.indexed_upto: int | None = None
        self._behind_since: float | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="cavra-search-indexer")

    async def stop(self) -> None:
        """Let the batch in progress finish, then end the loop."""
        self._stop.set()
        if self._task is not None:
            await self._task

    async def catch_up(self) -> None:
        """Index until nothing is left (tests and benchmarks call this; the loop does the same)."""
        while not await self._once():
            pass

    async def _once(self) -> bool:
        """Index one batch; return True when caught up."""
        self.pending, self.indexed_upto = await self.step(self.batch_rows)
        if self.pending == 0:
            self._behind_since = None
            return True
        if self._behind_since is None:
            self._behind_since = time.monotonic()
        return False

    async def _run(self) -> None:
        while not self._stop.is_set():
            caught_up = False
            try:
                caught_up = await self._once()
            except Exception:
                # Search still answers (it scans what is not indexed); try again after the pause.
                log.exception("search indexing failed")
                caught_up = True
            if caught_up:
                try:
                    await asyncio.wait_for(self._stop.wait(), self.interval_s)
                except TimeoutError:
                    pass

    def health(self) -> SearchHealth:
        lag_s = 0.0 if self._behind_since is None else time.monotonic() - self._behind_since
        return SearchHealth(self.pending, round(lag_s, 3), self.indexed_upto)
