"""The client against real server processes (and tiny fake ones): crashes on either side lose nothing."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web

from cavra_ingest.client import Client, SyncClient
from tests.procs import Server, check_file, free_port

pytestmark = pytest.mark.timeout(60)

OUTCOMES = ("allow", "block", "require_approval", "warn", "audit_only")


@pytest.fixture
async def servers():
    """Servers started through the returned list are killed at teardown."""
    started: list[Server] = []
    yield started
    for server in started:
        server.kill()


async def serve(servers: list[Server], db: Path, port: int | None = None) -> Server:
    server = Server(db)
    servers.append(server)
    await server.start(port=port)
    return server


async def until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    """Wait for a condition the code under test will make true (polled: it lives in another task or process)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.005)


def decision(n: int, **fields: Any) -> dict[str, Any]:
    return {"decision": OUTCOMES[n % len(OUTCOMES)], "session_id": f"sess-{n % 40}", "target": f"t{n}", **fields}


def stored_ids(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [row[0] for row in conn.execute("SELECT decision_id FROM activity_decisions")]


@pytest.mark.slow
async def test_server_killed_twice_loses_nothing_and_stores_each_once(tmp_path, servers):
    db = tmp_path / "activity.db"
    server = await serve(servers, db)
    recorded: list[str] = []
    async with Client(server.url, max_queue_records=3000, backoff_base_s=0.02, backoff_cap_s=0.25) as client:

        async def restart_when_noticed() -> None:
            retries = client.stats.retries
            await until(lambda: client.stats.retries > retries)
            await server.start(port=server.port)

        restarts = []
        for n in range(20_000):
            if n in (6_000, 13_000):
                server.kill()  # mid-stream: batches are in flight
                restarts.append(asyncio.create_task(restart_when_noticed()))
            decision_id = await client.record(decision(n))
            assert decision_id is not None
            recorded.append(decision_id)
        await asyncio.gather(*restarts)
        await client.flush()
        assert client.held_records == 0
        assert client.stats.failed == 0 and client.stats.retries >= 2
        assert client.stats.stored == 20_000
    ids = stored_ids(db)
    assert len(ids) == 20_000 and set(ids) == set(recorded)
    assert check_file(db)["ids"] == set(recorded)  # integrity, and every summary equals a recount


@pytest.mark.slow
async def test_client_killed_mid_stream_resends_its_spool(tmp_path, servers):
    db, spool = tmp_path / "activity.db", tmp_path / "spool.db"
    server = await serve(servers, db)
    script = str(Path(__file__).resolve().parents[1] / "client_script.py")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, script, server.url, str(spool), "20000", stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    printed: list[str] = []
    try:
        while len(printed) < 3000:
            line = await asyncio.wait_for(proc.stdout.readline(), 20)
            assert line.endswith(b"\n"), line
            printed.append(line.decode().strip())
            if len(printed) == 1000:
                server.kill()  # records pile up: memory to its cap, then the spool
    finally:
        proc.kill()
        await proc.wait()
    rest = await proc.stdout.read()
    # Every complete line is a record() that returned before the kill; a cut last line is not.
    printed += [line.decode() for line in rest.split(b"\n")[:-1]]
    assert all(line.startswith("dec_") for line in printed)
    with sqlite3.connect(spool) as conn:
        assert conn.execute("SELECT count(*) FROM spool").fetchone()[0] > 0

    await server.start()
    again = await asyncio.create_subprocess_exec(
        sys.executable, script, server.url, str(spool), "0", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(again.communicate(), 30)
    assert again.returncode == 0
    stats = msgspec.json.decode(out.splitlines()[-1])["stats"]
    assert stats["failed"] == 0 and stats["created"] > 0 and stats["recorded"] == 0
    ids = stored_ids(db)
    assert len(ids) == len(set(ids))
    assert set(printed) <= set(ids)
    with sqlite3.connect(spool) as conn:
        assert conn.execute("SELECT count(*) FROM spool").fetchone()[0] == 0
    check_file(db)


def shedding_app(
    statuses: list[int | str],
    arrivals: list[float],
    headers: list[dict[str, str]],
    release: asyncio.Event | None = None,
) -> web.Application:
    """A fake server: gives the statuses in turn (`"stall"`: no answer until `release`), then stores everything.

    A status given as a string of digits carries no Retry-After; an int carries `Retry-After: 1`.
    """

    async def post(request: web.Request) -> web.Response:
        arrivals.append(time.monotonic())
        headers.append(dict(request.headers))
        lines = [line for line in (await request.read()).split(b"\n") if line]
        if statuses:
            status = statuses.pop(0)
            if status == "stall":
                assert release is not None
                await release.wait()
                return web.json_response({}, status=503)
            retry_after = {"Retry-After": "1"} if isinstance(status, int) else {}
            return web.json_response({"detail": "no", "status": int(status)}, status=int(status), headers=retry_after)
        results = [
            {"index": i, "decision_id": msgspec.json.decode(line)["decision_id"], "status": "created", "error": None}
            for i, line in enumerate(lines)
        ]
        return web.json_response({"results": results, "created": len(lines), "duplicates": 0, "failed": 0})

    app = web.Application()
    app.router.add_post("/decisions", post)
    return app


@pytest.mark.slow
async def test_backoff_waits_at_least_retry_after(aiohttp_server):
    arrivals: list[float] = []
    headers: list[dict[str, str]] = []
    release = asyncio.Event()
    fake = await aiohttp_server(shedding_app([503, 429, "408", "stall"], arrivals, headers, release))
    options = {"token": "t0ken", "backoff_base_s": 0.01, "request_timeout_s": 0.5}
    try:
        async with Client(str(fake.make_url("/")), **options) as client:
            for n in range(3):
                await client.record(decision(n))
            await client.flush()
            assert client.stats.created == 3 and client.stats.retries == 4 and client.stats.failed == 0
    finally:
        release.set()
    assert len(arrivals) == 5
    gaps = [later - earlier for earlier, later in zip(arrivals, arrivals[1:], strict=False)]
    assert min(gaps[:2]) >= 1.0, gaps  # after each Retry-After: 1; jitter alone would be under 0.04 s
    assert gaps[2] < 1.0 and gaps[3] >= 0.5, gaps  # a 408 without it; a request timed out after 0.5 s
    assert headers[0]["Authorization"] == "Bearer t0ken"
    assert headers[0]["Content-Type"] == "application/x-ndjson"


@pytest.mark.parametrize("status", [401, 403, 400])
async def test_other_4xx_are_reported_once_and_not_retried(aiohttp_server, status):
    arrivals: list[float] = []
    fake = await aiohttp_server(shedding_app([status], arrivals, []))
    reported: list[tuple[str, int]] = []
    on_error = lambda record, status, error: reported.append((record["decision_id"], status))  # noqa: E731
    async with Client(str(fake.make_url("/")), on_error=on_error) as client:
        ids = [await client.record(decision(n)) for n in range(2)]
        await client.flush()
    assert sorted(reported) == sorted((i, status) for i in ids)
    assert len(arrivals) == 1 and client.stats.retries == 0 and client.stats.failed_by_status == {status: 2}


async def test_invalid_and_conflicting_records_are_reported_not_retried(tmp_path, servers):
    db = tmp_path / "activity.db"
    server = await serve(servers, db)
    reported: list[tuple[int, dict[str, Any]]] = []
    async with Client(server.url, on_error=lambda record, status, error: reported.append((status, error))) as client:
        good = await client.record(decision(1))
        await client.record(decision(2, decision="maybe"))
        await client.flush()
        assert [status for status, _ in reported] == [422]
        assert reported[0][1]["field"] == "$.decision"
        await client.record(decision(3, decision_id=good))  # same id, other content
        await client.flush()
        assert [status for status, _ in reported] == [422, 409]
        assert client.stats.retries == 0 and client.stats.created == 1
    assert stored_ids(db) == [good]


@pytest.mark.parametrize("cap", ["records", "bytes"])
async def test_drop_policy_keeps_memory_under_the_cap_while_the_server_is_down(cap):
    limits = {"max_queue_records": 100} if cap == "records" else {"max_queue_bytes": 20_000}
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens: every attempt is refused
    async with Client(url, when_full="drop", close_timeout_s=0.1, backoff_cap_s=0.05, **limits) as client:
        returned = [await client.record(decision(n, padding="x" * 150)) for n in range(500)]
        if cap == "records":
            assert client.held_records == 100
        else:
            assert 20_000 - 400 < client.held_bytes <= 20_000  # full: the next record (~330 bytes) did not fit
        assert client.stats.dropped == returned.count(None) > 0
        assert client.stats.dropped + client.held_records == 500
        await until(lambda: client.stats.retries > 0)


async def test_block_policy_awaits_room(tmp_path, servers):
    port = free_port()
    async with Client(f"http://127.0.0.1:{port}", max_queue_records=50, backoff_cap_s=0.05) as client:

        async def produce() -> list[str | None]:
            return [await client.record(decision(n)) for n in range(200)]

        producer = asyncio.create_task(produce())
        await until(lambda: client.stats.blocked > 0)
        assert not producer.done() and client.held_records == 50
        await serve(servers, tmp_path / "activity.db", port=port)
        ids = await asyncio.wait_for(producer, 20)
        await client.flush()
    assert sorted(stored_ids(tmp_path / "activity.db")) == sorted(ids)


async def test_sync_client_blocks_when_full(tmp_path, servers):
    port = free_port()
    with SyncClient(f"http://127.0.0.1:{port}", max_queue_records=50, backoff_cap_s=0.05) as client:
        ids: list[str | None] = []
        producer = threading.Thread(target=lambda: ids.extend(client.record(decision(n)) for n in range(200)))
        producer.start()
        await until(lambda: client.stats.blocked > 0)
        assert producer.is_alive() and client.client.held_records == 50
        await serve(servers, tmp_path / "activity.db", port=port)
        await asyncio.to_thread(producer.join, 20)
        assert not producer.is_alive()
        await asyncio.to_thread(client.flush, 20)
    assert sorted(stored_ids(tmp_path / "activity.db")) == sorted(ids)


@pytest.mark.slow
async def test_spool_policy_spills_to_disk_then_sends_it_all(tmp_path, servers):
    port, spool = free_port(), tmp_path / "spool.db"
    options = {"spool": spool, "when_full": "spool", "max_queue_records": 50, "backoff_cap_s": 0.05}
    async with Client(f"http://127.0.0.1:{port}", **options) as client:
        ids = [await client.record(decision(n)) for n in range(300)]
        assert client.held_records <= 50 and client.stats.spilled >= 250
        with sqlite3.connect(spool) as conn:
            assert conn.execute("SELECT count(*) FROM spool").fetchone() == (300,)
        await serve(servers, tmp_path / "activity.db", port=port)
        await asyncio.wait_for(client.flush(), 20)
        assert client.stats.created == 300
    assert sorted(stored_ids(tmp_path / "activity.db")) == sorted(ids)
    with sqlite3.connect(spool) as conn:
        assert conn.execute("SELECT count(*) FROM spool").fetchone() == (0,)


async def run_send(*args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cavra_ingest",
        "send",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.slow
async def test_send_command(tmp_path, servers):
    db = tmp_path / "activity.db"
    server = await serve(servers, db)
    ndjson = tmp_path / "in.ndjson"
    lines = [msgspec.json.encode(decision(n)) for n in range(300)] + [b'{"decision": "maybe", "session_id": "s"}']
    ndjson.write_bytes(b"\n".join(lines) + b"\n")
    code, out, err = await run_send(str(ndjson), "--url", server.url, "--batch-size", "64")
    assert code == 1, err
    assert "created 300, duplicate 0, failed 1" in out
    assert "422" in err

    array = msgspec.json.encode([decision(n, decision_id=f"arr-{n}") for n in range(40)])
    code, out, err = await run_send("-", "--url", server.url, stdin=array)
    assert code == 0, err
    assert "created 40, duplicate 0, failed 0" in out
    code, out, _ = await run_send("-", "--url", server.url, stdin=array)
    assert code == 0 and "created 0, duplicate 40, failed 0" in out
    assert len(stored_ids(db)) == 340


@pytest.mark.slow
async def test_sync_client_left_open_flushes_at_exit(tmp_path, servers):
    server = await serve(servers, tmp_path / "activity.db")
    script = (
        "import sys\nfrom cavra_ingest.client import SyncClient\n"
        "client = SyncClient(sys.argv[1], max_age_s=60)\nclient.start()\n"
        "for n in range(25): print(client.record({'decision': 'allow', 'session_id': 'left-open'}))\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, server.url, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0
    assert sorted(stored_ids(tmp_path / "activity.db")) == sorted(out.decode().split())
