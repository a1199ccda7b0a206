"""Followers of the decisions table by rowid: the search indexer (new rows indexed for `q` in large batches)
and the counts folder (a backlog of decisions the writer's batches leave to it, folded a step at a time)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from cavra_ingest.core.sink import CountsHealth, SearchHealth

log = logging.getLogger(__name__)

# Handles up to N rows; returns the rows still waiting and, where the store has one, its position (rowid).
IndexStep = Callable[[int], Awaitable[tuple[int, int | None]]]


class Follower:
    """Handle what is new, batch after batch until caught up, then look again after `interval_s`."""

    # What the follower does, for its task's name and its log.
    doing = "following"

    def __init__(self, step: IndexStep, *, batch_rows: int, interval_s: float) -> None:
        self.step = step
        self.batch_rows = batch_rows
        self.interval_s = interval_s
        self.pending = 0
        self.upto: int | None = None
        self._behind_since: float | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"cavra-{self.doing.replace(' ', '-')}")

    async def stop(self) -> None:
        """Let the batch in progress finish, then end the loop."""
        self._stop.set()
        if self._task is not None:
            await self._task

    async def catch_up(self) -> None:
        """Step until nothing is left (tests and benchmarks call this; the loop does the same)."""
        while not await self._once():
            pass

    async def _once(self) -> bool:
        """Handle one batch; return True when caught up."""
        self.pending, self.upto = await self.step(self.batch_rows)
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
                # Reads still answer (they read what is not handled yet from the table); try again after the pause.
                log.exception("%s failed", self.doing)
                caught_up = True
            if caught_up:
                try:
                    await asyncio.wait_for(self._stop.wait(), self.interval_s)
                except TimeoutError:
                    pass

    def lag_s(self) -> float:
        """Seconds since the follower was last caught up (0 when it is)."""
        return 0.0 if self._behind_since is None else round(time.monotonic() - self._behind_since, 3)


class SearchIndexer(Follower):
    doing = "search indexing"

    def health(self) -> SearchHealth:
        return SearchHealth(self.pending, self.lag_s(), self.upto)


class CountsFolder(Follower):
    doing = "counts folding"

    def health(self) -> CountsHealth:
        return CountsHealth(self.pending, self.lag_s(), self.upto)
