"""`serve`'s delivery child: `cavra-ingest deliver` started with the server's settings, restarted if it
exits, stopped (SIGTERM, then SIGKILL after a bound) with the app."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import sys
from collections.abc import Mapping

from cavra_ingest.settings import SPECS, Settings

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1
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


def child_environment(settings: Settings, environ: Mapping[str, str]) -> dict[str, str]:
    """The parent's effective settings as CAVRA_* variables (flags included), for its child."""
    env = {key: value for key, value in environ.items() if not key.startswith("CAVRA_")}
    for spec in SPECS:
        value = settings.value(spec)
        if value is None:
            continue
        env[spec.env] = ("1" if value else "0") if isinstance(value, bool) else str(value)
    env["CAVRA_SINK_DELIVERY"] = "inline"
    return env


def die_with_parent() -> None:
    """Run in the child before exec: SIGKILL it when the parent dies (Linux; elsewhere nothing)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:
        os._exit(0)  # the parent is gone already
