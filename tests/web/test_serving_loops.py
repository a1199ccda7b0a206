"""The connection cap on each event loop `serve` may run on: asyncio's own, and uvloop when installed."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web

from cavra_ingest.http import serving
from cavra_ingest.settings import Settings
from tests.procs import free_port


def new_uvloop() -> asyncio.AbstractEventLoop:
    import uvloop

    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


LOOPS: list[Any] = [pytest.param(asyncio.new_event_loop, id="asyncio")]
LOOPS.append(
    pytest.param(
        new_uvloop,
        id="uvloop",
        marks=pytest.mark.skipif(importlib.util.find_spec("uvloop") is None, reason="uvloop is not installed"),
    )
)


async def over_the_cap(port: int) -> bytes:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", ok)
    server = asyncio.create_task(serving.serve(app, Settings.of(port=port, max_connections=3, header_read_timeout_s=5)))
    try:
        for _ in range(50):
            try:
                _, probe = await asyncio.open_connection("127.0.0.1", port)
                probe.close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        stalled = []
        for _ in range(4):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\n")  # headers never end
            stalled.append(writer)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        reply = await asyncio.wait_for(reader.read(), 5)
        for each in [*stalled, writer]:
            each.close()
        return reply
    finally:
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)


@pytest.mark.parametrize("make_loop", LOOPS)
def test_a_client_over_the_cap_reads_a_503_on_every_loop(make_loop: Callable[[], asyncio.AbstractEventLoop]) -> None:
    loop = make_loop()
    try:
        reply = loop.run_until_complete(over_the_cap(free_port()))
    finally:
        loop.close()
    assert reply.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in reply, reply
