"""`serve`'s delivery child: `cavra-ingest deliver` started with the server's settings, restarted if it
exits, stopped (SIGTERM, then SIGKILL after a bound) with the app."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from cavra_ingest.settings import Settings

log = logging.getLogger(__name__)
RESTART_S = 1.0
STOP_WAIT_S = 5.0


class Child:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        """Start the child (once; later calls do nothing)."""
        if self._task is None and not self._stopping:
            self._task = asyncio.create_task(self._keep(), name="cavra-sink-child")

    async def _keep(self) -> None:
        from cavra_ingest.cli.deliver import child_environment, die_with_parent

        env = child_environment(self.settings, os.environ)
        while not self._stopping:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "cavra_ingest", "deliver", env=env,
                stdin=asyncio.subprocess.DEVNULL, preexec_fn=die_with_parent,
            )  # fmt: skip
            code = await self.proc.wait()
            if not self._stopping:
                log.warning("the sink delivery process exited with %s; restarting it", code)
                await asyncio.sleep(RESTART_S)

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task], timeout=STOP_WAIT_S)
        proc = self.proc
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), STOP_WAIT_S)
            except TimeoutError:
                proc.kill()
                await asyncio.wait_for(proc.wait(), STOP_WAIT_S)
