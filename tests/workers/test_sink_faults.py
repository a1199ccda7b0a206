"""kill -9 of a real server mid-stream: after a restart every committed decision reaches the receiver."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import POSTGRES_URL, decision, drop_schema, require_postgres
from tests.pgcheck import check_schema
from tests.procs import Server, acknowledged, check_file, free_port
from tests.sinkreceivers import decode_webhook, http_receiver, until

ENV = {"CAVRA_SINK_BATCH_MS": "20", "CAVRA_SINK_BATCH_MAX": "50", "CAVRA_SINK_LEASE_S": "2",
       "CAVRA_SINK_BACKOFF_S": "0.05", "CAVRA_SINK_BACKOFF_MAX_S": "0.5"}  # fmt: skip


@pytest.fixture(params=["sqlite", "postgres"])
async def one_server(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Server]:
    """A `serve` process (not started) on a SQLite file, or on a fresh schema of the PostgreSQL server."""
    if request.param == "sqlite":
        yield Server(tmp_path / "activity.db", env=ENV)
        return
    from cavra_ingest.store.postgres.store import PostgresStore

    require_postgres()
    schema = f"t_sinkkill_{uuid.uuid4().hex[:10]}"
    await PostgresStore(POSTGRES_URL, schema=schema).migrate()
    env = {**ENV, "CAVRA_POSTGRES_SCHEMA": schema, "CAVRA_SINK_KEY_FILE": str(tmp_path / "sink-key")}
    server = Server(None, env=env, cwd=tmp_path, db_url=POSTGRES_URL)
    try:
        yield server
    finally:
        server.kill()
        await drop_schema(schema)


@pytest.mark.slow
async def test_kill_9_mid_stream_then_restart_loses_nothing(one_server: Server) -> None:
    server = one_server
    committed: list[str] = []
    async with http_receiver(decode_webhook, "/hook") as receiver:
        await server.start()
        try:
            async with aiohttp.ClientSession() as http:
                body = {"name": "siem", "kind": "webhook", "target": receiver.url}
                async with http.post(f"{server.url}/sinks", json=body) as response:
                    assert response.status == 201, await response.text()
                    receiver.secret = (await response.json())["secret"]

                async def send(rounds: int) -> None:
                    for _ in range(rounds):
                        batch: list[dict[str, Any]] = [decision(session_id="s-kill") for _ in range(20)]
                        try:
                            async with http.post(f"{server.url}/decisions", json=batch) as response:
                                committed.extend(acknowledged(response.status, await response.json(), batch))
                        except (aiohttp.ClientError, ValueError):
                            return  # the server died under this request: unacknowledged, maybe stored

                await send(10)
                await until(lambda: len(receiver.ids()) >= 60, what="delivery under way")
                sender = asyncio.create_task(send(1000))
                await until(lambda: len(committed) >= 400, what="more posts")
                receiver.delay_s = 0.2
                await until(lambda: len(committed) >= 800, what="more posts while the receiver is slow")
                server.kill()
                lagging = len(set(committed) - receiver.ids())
                assert lagging > 0, "the kill came with nothing in flight"
                await asyncio.wait_for(sender, 10)
                receiver.delay_s = 0.0
                before = len(receiver.ids())
                port = server.port
                await server.start(port=port)
                await send(5)
            await until(lambda: receiver.ids() >= set(committed), timeout_s=30, what="every committed decision")
            assert not receiver.problems
            # At least once: a crash re-sends at most the batch in flight.
            duplicates = len(receiver.records) - len(receiver.ids())
            assert duplicates <= 50, duplicates
            assert before < len(receiver.ids())
            # Every record delivered is one the store holds (the receiver saw no invented ones).
            if server.db_url is not None:
                stored = await check_schema(POSTGRES_URL, server.env["CAVRA_POSTGRES_SCHEMA"])
            else:
                assert server.db is not None
                stored = check_file(server.db)
            assert receiver.ids() <= stored["ids"]
        finally:
            server.kill()


def parent_of(holder: str) -> int:
    """The parent pid of the lease holder (`host:pid:nonce`): the server whose delivery child it is."""
    pid = holder.split(":")[1]
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    raise AssertionError(holder)


def lease_holder(db: Path) -> str | None:
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT holder FROM sink_leases WHERE name = 'siem' AND expires_at >= ?",
                           (time.time(),)).fetchone()  # fmt: skip
    return None if row is None else str(row[0])


async def held_by(http: aiohttp.ClientSession, server: Server) -> bool:
    holder = lease_holder(server.db) if server.db is not None else None
    return holder is not None and parent_of(holder) == server.pid


async def test_two_servers_one_deliverer_and_takeover_after_kill_9(tmp_path: Path) -> None:
    db = tmp_path / "activity.db"
    one, two = Server(db, env=ENV), Server(db, env={**ENV, "CAVRA_SEARCH_INDEX": "0"})
    async with http_receiver(decode_webhook, "/hook") as receiver:
        await one.start()
        await two.start()
        try:
            async with aiohttp.ClientSession() as http:
                body = {"name": "siem", "kind": "webhook", "target": receiver.url}
                async with http.post(f"{two.url}/sinks", json=body) as response:
                    assert response.status == 201, await response.text()
                    receiver.secret = (await response.json())["secret"]
                first = [decision(session_id="s-two") for _ in range(100)]
                async with http.post(f"{one.url}/decisions", json=first) as response:
                    assert response.status == 200
                await until(lambda: receiver.ids() >= {r["decision_id"] for r in first}, what="first delivery")
                holders = [await held_by(http, s) for s in (one, two)]
                assert holders.count(True) == 1, holders
                assert len(receiver.records) == len(receiver.ids()), "one deliverer: no duplicates"
                holder, survivor = (one, two) if holders[0] else (two, one)
                holder.kill()
                later = [decision(session_id="s-two") for _ in range(50)]
                async with http.post(f"{survivor.url}/decisions", json=later) as response:
                    assert response.status == 200
                # The lease (2 s) expires, the survivor takes the sink over and resumes at the cursor.
                await until(lambda: receiver.ids() >= {r["decision_id"] for r in later}, what="takeover")
                await until(lambda: lease_holder(db) is not None, what="a lease")
                assert await held_by(http, survivor)
        finally:
            one.kill()
            two.kill()


async def holder_pid(server: Server, name: str) -> int | None:
    """The pid of the process delivering the sink now (its lease holder, `host:pid:nonce`)."""
    if server.db_url is None:
        assert server.db is not None
        with sqlite3.connect(server.db) as conn:
            row = conn.execute("SELECT holder FROM sink_leases WHERE name = ? AND expires_at >= ?",
                               (name, time.time())).fetchone()  # fmt: skip
        holder = None if row is None else str(row[0])
    else:
        import asyncpg

        schema = server.env["CAVRA_POSTGRES_SCHEMA"]
        conn = await asyncpg.connect(POSTGRES_URL, server_settings={"search_path": schema})
        try:
            holder = await conn.fetchval("SELECT holder FROM sink_leases WHERE name = $1 AND expires_at >= $2",
                                         name, time.time())  # fmt: skip
        finally:
            await conn.close()
    return None if holder is None else int(holder.split(":")[1])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.mark.slow
async def test_a_stuck_and_an_unreachable_sink_never_slow_ingest_nor_grow_memory(one_server: Server) -> None:
    """One sink's receiver takes connections and never answers, another's port refuses them: ingest and
    reads answer as fast as with no sinks, the delivery process holds one batch per sink whatever the lag,
    and the lag shows."""
    server = one_server
    server.env = {**server.env, "CAVRA_SINK_TIMEOUT_S": "60"}  # the stuck send outlasts the test
    held: list[asyncio.StreamWriter] = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        while await reader.read(65536):
            pass

    blackhole = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    refused = free_port()  # nothing listens there
    await server.start()
    timeout = aiohttp.ClientTimeout(total=10)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as http:

            async def ingest(rounds: int) -> list[float]:
                """Seconds each POST of 200 decisions and each read after it took."""
                took = []
                for _ in range(rounds):
                    batch = [decision(session_id=f"s-stuck-{i % 7}") for i in range(200)]
                    started = time.monotonic()
                    async with http.post(f"{server.url}/decisions", json=batch) as response:
                        assert response.status == 200, await response.text()
                    async with http.get(f"{server.url}/decisions", params={"limit": "50"}) as response:
                        assert response.status == 200 and len((await response.json())["items"]) == 50
                    took.append(time.monotonic() - started)
                return took

            alone = await ingest(20)
            port = blackhole.sockets[0].getsockname()[1]
            for name, target in (("stuck", f"http://127.0.0.1:{port}/hook"), ("down", f"http://127.0.0.1:{refused}/")):
                async with http.post(
                    f"{server.url}/sinks", json={"name": name, "kind": "webhook", "target": target}
                ) as r:
                    assert r.status == 201, await r.text()
            await until(lambda: bool(held), what="the stuck sink's first send")
            child = await holder_pid(server, "stuck")
            assert child is not None and child != server.pid and child == await holder_pid(server, "down")
            before = rss_kib(child)
            beside = await ingest(100)  # 20,000 more decisions, none of which can leave
            grown = rss_kib(child) - before
            lag = {}
            for name in ("stuck", "down"):
                async with http.get(f"{server.url}/sinks/{name}") as response:
                    shown = await response.json()
                assert shown["delivered"] == 0, shown
                lag[name] = shown["lag_records"]
    finally:
        server.kill()
        for writer in held:
            writer.close()
        blackhole.close()
    # The lag shows every decision past the one batch each sink holds (CAVRA_SINK_BATCH_MAX, 50 here).
    assert min(lag.values()) >= 24_000 - 50, lag
    # The delivery process did not take the backlog into memory (a copy of it would be tens of MiB).
    assert grown < 8 * 1024, f"the delivery process grew by {grown} KiB over a backlog of 20,000 decisions"
    median = sorted(beside)[len(beside) // 2]
    baseline = sorted(alone)[len(alone) // 2]
    assert median < 3 * baseline + 0.05, (median, baseline)
