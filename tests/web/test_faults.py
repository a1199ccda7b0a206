"""Fault tests on a real server process and a real SQLite file: crash, stop, store faults, overload, slow clients."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import time
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from cavra_ingest.core.models import DecisionRecord
from cavra_ingest.core.summary import recount
from tests.conftest import writer_of
from tests.procs import Server, acknowledged, check_file

ROUNDS = int(os.environ.get("CAVRA_FAULT_ROUNDS", "3"))
SESSIONS = [f"sess-crash-{n}" for n in range(6)]
OUTCOMES = ["allow", "block", "require_approval", "warn", "audit_only"]
_ids = itertools.count()

pytestmark = pytest.mark.timeout(60 + 20 * ROUNDS)


@pytest.fixture
def spawn(tmp_path: Path) -> Any:
    """Start servers that are killed at teardown whatever happened to the test."""
    started: list[Server] = []

    async def start(db: Path | None = None, **env: str) -> Server:
        server = Server(db or tmp_path / "activity.db", env=env)
        started.append(server)
        await server.start()
        return server

    yield start
    for server in started:
        server.kill()


def make_decision(prefix: str, rng: random.Random) -> dict[str, Any]:
    n = next(_ids)
    return {
        "decision_id": f"{prefix}-{n:07d}",
        "session_id": rng.choice(SESSIONS),
        "decision": rng.choice(OUTCOMES),
        # Out-of-order timestamps, so the summary's earliest/latest rules are exercised.
        "timestamp": f"2026-03-01T{rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}+00:00",
        "agent_id": rng.choice(["agent-a", "agent-b"]),
        "evidence_refs": rng.sample(["ev-1", "ev-2", "ev-3", "ev-4"], rng.randrange(3)),
        "target": "x" * rng.randrange(200),
    }


async def load(
    url: str,
    prefix: str,
    seed: int,
    stop: asyncio.Event,
    acked: set[str],
    statuses: dict[Any, int],
    unknown: list[dict[str, Any]] | None = None,
) -> None:
    """Post singles and batches (with some replays) until stopped; record what was acknowledged.

    Records sent without an answer (the connection died) go to `unknown`: their fate is for the client to learn.
    """
    rng = random.Random(seed)
    mine: list[dict[str, Any]] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        while not stop.is_set():
            if rng.random() < 0.5:
                sent = [make_decision(prefix, rng)]
                body: Any = sent[0]
            else:
                sent = [make_decision(prefix, rng) for _ in range(rng.randrange(2, 60))]
                if mine and rng.random() < 0.3:
                    sent.append(rng.choice(mine))  # a replay: must come back as a duplicate
                body = sent
            try:
                async with http.post(f"{url}/decisions", json=body) as response:
                    reply = await response.json()
                    statuses[response.status] = statuses.get(response.status, 0) + 1
                    ids = acknowledged(response.status, reply, sent)
            except (TimeoutError, aiohttp.ClientError) as exc:
                statuses[type(exc).__name__] = statuses.get(type(exc).__name__, 0) + 1
                if unknown is not None:
                    unknown.extend(sent)
                continue
            acked.update(ids)
            mine.extend(d for d in sent if d["decision_id"] in ids)


def read_json_store(path: Path) -> dict[str, Any]:
    """Check a JSON store file parses whole and its summaries equal recounts; return its ids."""
    data = msgspec.json.decode(path.read_bytes())
    records = [msgspec.convert(d, DecisionRecord) for d in data["decisions"]]
    ids = [r.decision_id for r in records]
    assert len(ids) == len(set(ids)), "a decision is stored twice"
    for session in data["sessions"]:
        expected = recount(session["session_id"], [r for r in records if r.session_id == session["session_id"]])
        assert (session["decision_count"], session["blocked_count"], session["updated_at"]) == (
            expected.decision_count,
            expected.blocked_count,
            expected.updated_at,
        )
    return {"ids": set(ids), "sessions": len(data["sessions"])}


@pytest.mark.parametrize(
    ("kind", "synchronous", "rounds"),
    [("sqlite", "FULL", ROUNDS), ("sqlite", "OFF", 1), ("json", None, 1)],
    ids=["sqlite-FULL", "sqlite-OFF", "json"],
)
async def test_kill_9_loses_nothing_acknowledged(
    tmp_path: Path, spawn: Any, kind: str, synchronous: str | None, rounds: int
) -> None:
    """SIGKILL under load, restart on the same file: every acknowledged decision is there once, summaries agree.

    A process crash loses nothing acknowledged at any `synchronous` level (OFF included): committed pages are
    in the OS's hands before the reply. Power loss is another matter (docs/guarantees.md).
    """
    path = tmp_path / ("activity.json" if kind == "json" else "activity.db")
    check = read_json_store if kind == "json" else check_file
    env = {"CAVRA_SQLITE_SYNCHRONOUS": synchronous} if synchronous else {}
    rng = random.Random(os.environ.get("CAVRA_FAULT_SEED", "5"))
    acked: set[str] = set()
    unknown: list[dict[str, Any]] = []
    statuses: dict[Any, int] = {}
    for round_no in range(rounds):
        server = await spawn(path, **env)
        before = len(acked)
        stop = asyncio.Event()
        workers = [
            asyncio.create_task(
                load(server.url, f"r{round_no}w{w}", rng.randrange(1 << 30), stop, acked, statuses, unknown)
            )
            for w in range(4)
        ]
        await asyncio.sleep(rng.uniform(0.4, 1.5))  # the fault's random moment, not a wait for a result
        server.kill()
        stop.set()
        await asyncio.gather(*workers)
        assert len(acked) > before, f"round {round_no} acknowledged nothing: {statuses}"
        missing = acked - check(path)["ids"]
        assert not missing, f"round {round_no}: {len(missing)} acknowledged decisions lost"
    assert all(isinstance(k, str) or k in (200, 207) for k in statuses), statuses
    server = await spawn(path, **env)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/decisions", params={"limit": "1"}) as response:
            assert (await response.json())["total"] == len(check(path)["ids"])
        for decision_id in random.Random(1).sample(sorted(acked), 50):
            async with http.get(f"{server.url}/decisions/{decision_id}") as response:
                assert response.status == 200
        # What a client never got an answer for, it sends again: each is stored once, never a conflict.
        retried: dict[str, int] = {}
        for start in range(0, len(unknown), 500):
            status, body, _ = await post(http, server.url, unknown[start : start + 500])
            assert status == 200, body
            for result in body["results"]:
                retried[result["status"]] = retried.get(result["status"], 0) + 1
        assert set(retried) <= {"created", "duplicate"}
    await server.terminate(timeout=15)
    assert {d["decision_id"] for d in unknown} | acked <= check(path)["ids"]
    print(
        f"crash[{kind} {synchronous or ''}]: {rounds} rounds, {len(acked)} acknowledged decisions verified;"
        f" responses {statuses}; {len(unknown)} unanswered records resent: {retried}"
    )


async def post(http: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any, Any]:
    async with http.post(f"{url}/decisions", json=body) as response:
        return response.status, await response.json(), response.headers


@pytest.mark.parametrize("deadline", [5.0, 0.3], ids=["drains", "deadline-passes"])
async def test_sigterm_under_load_drains_within_deadline(tmp_path: Path, spawn: Any, deadline: float) -> None:
    """SIGTERM while batches are queued: each gets 200 or 503, nothing acknowledged is lost, exit within the deadline.

    With the short deadline the queued work cannot all commit in time: what did not gets a 503, not a dropped
    connection, and the process still exits on time.
    """
    db = tmp_path / "activity.db"
    server = await spawn(db, CAVRA_DRAIN_DEADLINE_S=str(deadline))
    acked: set[str] = set()
    statuses: dict[Any, int] = {}
    stop = asyncio.Event()
    workers = [asyncio.create_task(load(server.url, f"t{w}", w, stop, acked, statuses)) for w in range(3)]
    rng = random.Random(7)
    big = [[make_decision(f"big{b}", rng) | {"target": "t" * 300} for _ in range(1000)] for b in range(16)]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        in_flight = [asyncio.create_task(post(http, server.url, batch)) for batch in big]
        # SIGTERM only once the writer really holds queued work.
        async with http.get(f"{server.url}/healthz") as response:
            queued = (await response.json())["queued_records"]
        poll_until = time.monotonic() + 10
        while queued == 0 and time.monotonic() < poll_until:
            async with http.get(f"{server.url}/healthz") as response:
                queued = (await response.json())["queued_records"]
        assert queued > 0
        stop.set()
        code, took = await server.terminate(timeout=deadline * 3 + 10)
        results = await asyncio.gather(*in_flight, return_exceptions=True)
    await asyncio.gather(*workers)
    assert code == 0, server.log()[-2000:]
    assert took <= deadline + 2.0, took  # the commit in progress and teardown; never a second deadline
    for batch, result in zip(big, results, strict=True):
        assert not isinstance(result, BaseException), result
        status, body, headers = result
        if status == 503:
            assert headers["Retry-After"] == "1" and body["status"] == 503
            continue
        assert status == 200, body
        acked.update(d["decision_id"] for d in batch)
    assert set(statuses) <= {200, 207, 503, "ClientConnectorError", "ServerDisconnectedError", "ClientOSError"}
    found = check_file(db)
    assert acked <= found["ids"]
    big_statuses = [r[0] for r in results if not isinstance(r, BaseException)]
    print(
        f"sigterm: exit {code} in {took:.2f}s (deadline {deadline}s), {len(acked)} acknowledged;"
        f" queued batches {big_statuses}; load {statuses}"
    )


@pytest.fixture
async def locked_server(spawn: Any) -> Server:
    return await spawn(CAVRA_SQLITE_BUSY_TIMEOUT_MS="200")


async def assert_fault_then_recovery(server: Server, fault: Any, clear: Any) -> None:
    """Under the fault writes get a retryable 503 and leave nothing; once it clears, the same batch commits."""
    rng = random.Random(11)
    batch = [make_decision("fault", rng) | {"target": "t" * 1000} for _ in range(400)]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        assert (await post(http, server.url, batch))[0] == 200  # the store works before the fault
        batch = [make_decision("fault", rng) | {"target": "t" * 1000} for _ in range(400)]
        fault()
        try:
            status, body, headers = await post(http, server.url, batch)
            assert status == 503, body
            assert headers["Retry-After"] == "1" and body["error"] == "unavailable"
            status, body, headers = await post(http, server.url, batch[0])
            assert status == 503, body
            for decision in (batch[0], batch[-1]):
                async with http.get(f"{server.url}/decisions/{decision['decision_id']}") as response:
                    assert response.status == 404  # nothing of the failed batch is visible
            async with http.get(f"{server.url}/healthz") as response:
                assert response.status == 200  # the server itself stays up
        finally:
            clear()
        status, body, _ = await post(http, server.url, batch)
        assert status == 200 and body["created"] == len(batch), body  # nothing of the failed attempt was kept
        status, body, _ = await post(http, server.url, batch)
        assert status == 200 and body["duplicates"] == len(batch), body  # and a further retry stores nothing
    await server.terminate(timeout=15)
    check_file(server.db)


async def test_locked_database_gets_503_then_recovers(locked_server: Server) -> None:
    """Another process holds the write lock: 503 + Retry-After after the busy timeout, then recovery."""
    import sqlite3

    other = sqlite3.connect(locked_server.db, isolation_level=None)

    def lock() -> None:
        other.execute("BEGIN IMMEDIATE")

    def unlock() -> None:
        other.execute("ROLLBACK")
        other.close()

    await assert_fault_then_recovery(locked_server, lock, unlock)


def _chattr(flag: str, *paths: Path) -> None:
    import subprocess

    subprocess.run(["chattr", flag, *map(str, paths)], check=True, capture_output=True)


async def test_read_only_database_gets_503_then_recovers(locked_server: Server) -> None:
    """The database and its WAL become immutable (read-only even for root): 503, then recovery."""
    files = [locked_server.db, locked_server.db.with_name(locked_server.db.name + "-wal")]
    try:
        _chattr("-i", *files)
    except (OSError, Exception) as exc:  # not ext2/3/4, or no chattr binary
        pytest.skip(f"chattr is not usable here: {exc}")
    # The -shm file stays writable: it is mmap'ed, and an immutable one is a SIGBUS, not an error code.
    await assert_fault_then_recovery(locked_server, lambda: _chattr("+i", *files), lambda: _chattr("-i", *files))


@pytest.fixture
def small_fs(tmp_path: Path) -> Any:
    import subprocess

    mount_point = tmp_path / "small"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount_point)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


async def test_full_disk_gets_503_then_recovers(small_fs: Path, spawn: Any) -> None:
    """The filesystem holding the database fills up: 503, and once space is freed the writer recovers."""
    # With no free-space floor, so the disk really fills (tests/web/test_limits.py tests the floor).
    server = await spawn(small_fs / "activity.db", CAVRA_MIN_FREE_DISK_BYTES="0")
    ballast = small_fs / "ballast"

    def fill() -> None:
        # Unbuffered: a buffered file would try the failed write again on close and raise there.
        with open(ballast, "wb", buffering=0) as handle:
            try:
                while True:
                    handle.write(b"\0" * 65536)
            except OSError:
                pass

    await assert_fault_then_recovery(server, fill, lambda: ballast.unlink())


async def test_overload_sheds_excess_with_503_and_recovers(spawn: Any) -> None:
    """A burst far above the queue: excess gets 503 + Retry-After, memory stays bounded, then service is normal."""
    queue_max = 500
    server = await spawn(CAVRA_QUEUE_MAX_RECORDS=str(queue_max))
    rng = random.Random(3)
    requests = int(os.environ.get("CAVRA_BURST_REQUESTS", "400"))
    burst = [[make_decision("burst", rng) for _ in range(100)] for _ in range(requests)]
    rss_before = server.peak_rss_kib()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as http:

        async def timed(batch: list[dict[str, Any]]) -> tuple[int, Any, Any, float]:
            start = time.monotonic()
            status, body, headers = await post(http, server.url, batch)
            return status, body, headers, time.monotonic() - start

        results = await asyncio.gather(*(timed(batch) for batch in burst))
        peak_rss = server.peak_rss_kib()
        statuses = [r[0] for r in results]
        assert set(statuses) <= {200, 503}, set(statuses)
        shed = [r for r in results if r[0] == 503]
        assert shed and statuses.count(200) > 0
        for _, body, headers, _ in shed:
            assert headers["Retry-After"] == "1" and body["error"] == "unavailable"
        async with http.get(f"{server.url}/healthz") as response:
            health = await response.json()
        assert health["queued_records"] == 0  # every request got its answer, so nothing is left queued
        # Back to normal: the shed batches go in on retry.
        for batch in [burst[i] for i, r in enumerate(results) if r[0] == 503][:20]:
            assert (await post(http, server.url, batch))[0] == 200
    await server.terminate(timeout=15)
    stored = check_file(server.db)["ids"]
    committed = {d["decision_id"] for batch, r in zip(burst, results, strict=True) if r[0] == 200 for d in batch}
    assert committed <= stored
    shed_ms = sorted(r[3] * 1000 for r in shed)
    ok_ms = sorted(r[3] * 1000 for r in results if r[0] == 200)
    print(
        f"overload: {requests}x100 records at queue {queue_max}: {len(ok_ms)} ok, {len(shed_ms)} shed;"
        f" p50 shed {shed_ms[len(shed_ms) // 2]:.0f} ms vs ok {ok_ms[len(ok_ms) // 2]:.0f} ms;"
        f" peak RSS {rss_before // 1024} -> {peak_rss // 1024} MiB"
    )
    # The queue bounds what waits for the disk; what remains is the bodies of requests being read at once.
    assert peak_rss - rss_before < 200 * 1024


async def raw_request(port: int, head: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    await writer.drain()
    return reader, writer


async def test_slow_and_stalled_bodies_time_out_without_holding_others(spawn: Any) -> None:
    """Bodies that never finish get 408 JSON after the read timeout; other clients are served meanwhile."""
    server = await spawn(CAVRA_BODY_READ_TIMEOUT_S="3")
    head = (
        b"POST /decisions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 5000\r\n\r\n{"
    )
    stalled = [await raw_request(server.port, head) for _ in range(20)]
    # Headers that never end: aiohttp has no timeout for them, but they hold only their own connection.
    _, header_stall = await raw_request(server.port, b"POST /decisions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-")
    trickle_reader, trickle_writer = await raw_request(server.port, head)

    async def trickle() -> None:
        try:
            for _ in range(40):
                trickle_writer.write(b" ")
                await trickle_writer.drain()
                await asyncio.sleep(0.1)  # a client sending one byte every 100 ms
        except ConnectionError:
            pass

    trickling = asyncio.create_task(trickle())
    rng = random.Random(5)
    async with aiohttp.ClientSession() as http:
        for _ in range(10):
            status, _, _ = await post(http, server.url, make_decision("fast", rng))
            assert status == 200
        # All served while every slow client is still waiting for its answer.
        assert not any(reader.at_eof() or reader._buffer for reader, _ in stalled)  # noqa: SLF001
    for reader, writer in [*stalled, (trickle_reader, trickle_writer)]:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 408"), head
        length = next(
            int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
        )
        body = await reader.readexactly(length)
        assert b'"status":408' in body and b'"error":"request_timeout"' in body
        writer.close()
    await trickling
    header_stall.close()


async def test_full_queue_sheds_before_reading_the_body(make_client: Any) -> None:
    """With the queue already full, a request is refused from its headers: its body is never waited for."""
    client = await make_client(body_read_timeout_s=30.0, queue_max_records=10)
    writer = writer_of(client)
    writer.pending_records = writer.settings.queue_max_records  # as if ten records were waiting for the disk
    try:
        reader, stream = await raw_request(
            client.port,
            b"POST /decisions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000\r\n\r\n[",
        )
        # The body never comes: an answer other than a 408 after 30 s proves it was not waited for.
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in head
        stream.close()
    finally:
        writer.pending_records = 0


async def test_configured_durability_is_the_one_in_force(tmp_path: Path) -> None:
    """CAVRA_SQLITE_SYNCHRONOUS reaches the writer connection's PRAGMA."""
    from cavra_ingest.settings import Settings
    from cavra_ingest.store import make_store

    for level, code in (("extra", 3), ("FULL", 2), ("NORMAL", 1), ("OFF", 0)):
        settings = Settings.from_env({"CAVRA_SQLITE_SYNCHRONOUS": level, "CAVRA_ACTIVITY_DB": str(tmp_path / "d.db")})
        store: Any = make_store(settings)
        await store.open()
        try:
            assert store._writer.execute("PRAGMA synchronous").fetchall() == [(code,)]
        finally:
            await store.close()


async def test_unknown_durability_level_refuses_to_start(spawn: Any) -> None:
    with pytest.raises(RuntimeError, match="CAVRA_SQLITE_SYNCHRONOUS: expected one of"):
        await spawn(CAVRA_SQLITE_SYNCHRONOUS="SOMETIMES")
