"""A synchronous front for agents that are not async: the asyncio client on a background thread's loop."""

from __future__ import annotations

import asyncio
import atexit
import threading
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

from cavra_ingest.client.core import Client
from cavra_ingest.client.items import Stats

T = TypeVar("T")


class SyncClient:
    """`with SyncClient(url) as client: client.record({...})`; takes the same arguments as `Client`."""

    def __init__(self, base_url: str, **options: Any) -> None:
        self._client = Client(base_url, **options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="cavra-client", daemon=True)
        self._started = False

    def __enter__(self) -> SyncClient:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def stats(self) -> Stats:
        return self._client.stats

    @property
    def client(self) -> Client:
        """Return the asyncio client underneath (read its counters; call it only through this object)."""
        return self._client

    def start(self) -> None:
        """Start the loop's thread and the client on it."""
        self._thread.start()
        self._started = True
        self._call(self._client.start())
        # An agent that never calls close() still gets its records flushed at interpreter exit.
        atexit.register(self.close)

    def record(self, decision: Mapping[str, Any]) -> str | None:
        """Queue one decision; returns at once unless the queue is full under `when_full='block'`."""
        return self._call(self._client.record(decision))

    def flush(self, timeout: float | None = None) -> None:
        """Wait until everything recorded so far is answered for; TimeoutError after `timeout` seconds."""
        self._call(self._client.flush(), timeout)

    def close(self) -> None:
        """Flush within the client's `close_timeout_s`, stop it and its thread."""
        if not self._started:
            return
        self._started = False
        atexit.unregister(self.close)
        try:
            self._call(self._client.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def _call(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)
