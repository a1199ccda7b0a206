"""Issue 18 against a real `cavra-ingest serve` process: memory, connections and read isolation under attack."""

from __future__ import annotations

import asyncio
import io
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.procs import Server

pytestmark = pytest.mark.timeout(180)
MIB = 1024 * 1024


@pytest.fixture
async def spawn(tmp_path: Path) -> Any:
    started: list[Server] = []

    async def start(**env: str) -> Server:
        server = Server(tmp_path / "activity.db", env=env)
        started.append(server)
        await server.start()
        return server

    yield start
    for server in started:
        server.kill()


async def send_body(port: int, body: bytes) -> bytes:
    """Send one POST in full and return the status line."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        "POST /decisions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    writer.write(head.encode())
    try:
        for start in range(0, len(body), MIB):
            writer.write(body[start : start + MIB])
            await writer.drain()
    except ConnectionError:
        pass  # refused before reading: the server closed while we were still sending
    try:
        return await asyncio.wait_for(reader.readline(), 60)
    finally:
        writer.close()


@pytest.mark.slow
async def test_peak_rss_under_big_bodies_stays_bounded(spawn: Any) -> None:
    """40 concurrent 8 MiB bodies and 8 MiB arrays of numbers: peak RSS grows by well under the 377 MB and
    302 MB the review measured; over the in-flight budget requests get 503 before being read."""
    server = await spawn()
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/decisions") as response:
            assert response.status == 200
    before = server.peak_rss_kib()
    numbers = b"[" + b"1," * (4 * MIB - 2) + b"1]"  # 8 MiB, about 4 million elements
    statuses = await asyncio.gather(*(send_body(server.port, numbers) for _ in range(40)))
    codes = [line.split()[1].decode() for line in statuses if line]
    assert set(codes) <= {"413", "503"} and "413" in codes and "503" in codes, codes
    for _ in range(5):
        assert (await send_body(server.port, numbers)).split()[1] == b"413"
    growth_mib = (server.peak_rss_kib() - before) / 1024
    print(f"peak RSS {before / 1024:.0f} MiB -> +{growth_mib:.0f} MiB; 40 x 8 MiB bodies: {sorted(codes)}")
    assert growth_mib < 200, growth_mib


async def stalled_headers(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /decisions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-")
    await writer.drain()
    return reader, writer


async def answer(reader: asyncio.StreamReader) -> bytes:
    """The status line a stalled connection finally got, or "reset" when it was closed without reading."""
    try:
        return (await asyncio.wait_for(reader.read(), 15))[:12]
    except ConnectionResetError:
        # Beyond 16 lingering refusals a refused connection is closed at once: freed, not hung.
        return b"reset"


@pytest.mark.slow
async def test_stalled_header_senders_cannot_lock_out_new_clients(spawn: Any) -> None:
    """Over the connection cap new clients get an immediate 503 (not a timeout); stalled header senders are
    closed with 408 after the header-read timeout; the condition is logged once, not per connection."""
    server = await spawn(CAVRA_MAX_CONNECTIONS="40", CAVRA_HEADER_READ_TIMEOUT_S="5")
    opened = time.monotonic()
    stalled = [await stalled_headers(server.port) for _ in range(60)]
    assert time.monotonic() - opened < 4, "opening took longer than the header timeout: nothing to measure"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        started = time.monotonic()
        async with http.get(f"{server.url}/healthz") as response:
            assert response.status == 503 and response.headers["Retry-After"] == "1"
        assert time.monotonic() - started < 1.0
        # The stalled ones are told 408 (or were refused at once with 503) and closed.
        answers = [await answer(reader) for reader, _ in stalled]
        assert answers.count(b"HTTP/1.1 408") == 40 and set(answers) <= {b"HTTP/1.1 408", b"HTTP/1.1 503", b"reset"}
        async with http.get(f"{server.url}/healthz") as response:
            assert response.status == 200
    for _, writer in stalled:
        writer.close()
    log = server.log()
    assert log.count("connection cap of 40 reached") == 1, log[-2000:]
    assert log.count("sent no complete request headers") <= 2
    assert "Too many open files" not in log and "Traceback" not in log


@pytest.mark.slow
async def test_point_reads_stay_fast_while_exports_run(spawn: Any) -> None:
    """Three CSV exports in a loop (the review's starvation case) beside single-record reads: their p99."""
    server = await spawn()
    rng = random.Random(18)
    ids: list[str] = []
    async with aiohttp.ClientSession() as http:
        for batch_no in range(12):
            batch = [
                {
                    "decision": rng.choice(["allow", "block", "warn"]),
                    "session_id": f"s-{rng.randrange(500)}",
                    "decision_id": f"d-{batch_no}-{i}",
                    "agent_id": f"agent-{rng.randrange(20)}",
                    "target": "x" * rng.randrange(10, 200),
                    "timestamp": f"2026-0{1 + batch_no % 9}-1{i % 10}T10:{i % 60:02d}:00+00:00",
                }
                for i in range(5000)
            ]
            ids += [d["decision_id"] for d in batch[::500]]
            body = io.BytesIO(json.dumps(batch).encode())
            headers = {"Content-Type": "application/json"}
            async with http.post(f"{server.url}/decisions", data=body, headers=headers) as response:
                assert response.status == 200

        stop = asyncio.Event()
        exported: list[int] = []

        async def export() -> None:
            while not stop.is_set():
                async with http.get(f"{server.url}/decisions.csv") as response:
                    exported.append(len(await response.read()))

        async def read_all() -> list[float]:
            took = []
            for n in range(300):
                started = time.perf_counter()
                async with http.get(f"{server.url}/decisions/{ids[n % len(ids)]}") as response:
                    assert response.status == 200
                took.append(time.perf_counter() - started)
            return took

        quiet = await read_all()
        exporters = [asyncio.create_task(export()) for _ in range(3)]
        busy = await read_all()
        stop.set()
        await asyncio.gather(*exporters)
    p99 = statistics.quantiles(busy, n=100)[98]
    print(
        f"single-record read p50/p99: quiet {statistics.median(quiet) * 1e3:.1f}/"
        f"{statistics.quantiles(quiet, n=100)[98] * 1e3:.1f} ms, beside 3 exports of 60,000 rows "
        f"{statistics.median(busy) * 1e3:.1f}/{p99 * 1e3:.1f} ms ({len(exported)} exports done)"
    )
    # The review saw 5.4 s at the median; what is left is CPU shared with the exports on two cores.
    assert p99 < 1.0, p99


@pytest.mark.slow
async def test_300_stalled_header_senders_under_a_256_descriptor_limit(tmp_path: Path) -> None:
    """The review's case: fd limit 256, 300 stalled header senders. New clients get an answer (503, then 200
    once the stalled ones time out), and the log holds no "Too many open files" flood."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    server = Server(tmp_path / "activity.db", env={"CAVRA_HEADER_READ_TIMEOUT_S": "6"})
    # The server inherits the lowered limit; this process gets its own back at once.
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        start = asyncio.create_task(server.start())
        await asyncio.sleep(0)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        await start
        stalled = [await stalled_headers(server.port) for _ in range(300)]
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            async with http.get(f"{server.url}/healthz") as response:
                assert response.status == 503
            answers = [await answer(reader) for reader, _ in stalled]
            for _, writer in stalled:
                writer.close()
            assert set(answers) <= {b"HTTP/1.1 408", b"HTTP/1.1 503", b"reset"}, set(answers)
            assert answers.count(b"HTTP/1.1 408") == 128, answers
            async with http.get(f"{server.url}/healthz") as response:
                assert response.status == 200
        log = server.log()
        assert log.count("Too many open files") <= 1 and "Traceback" not in log, log[-2000:]
        assert log.count("connection cap of 128 reached") == 1, log[-2000:]
    finally:
        server.kill()
