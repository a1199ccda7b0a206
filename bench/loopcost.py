"""What a single-decision POST costs the event loop apart from the store, in CPU µs, in one process.

`python -m bench.loopcost [--requests 20000] [--repeats 5]` serves, on one uvloop loop in this process,
the no-op handler (bench/noop_server.py) and the real app whose sink answers at once
(bench/null_sink_server.py), in turn, and drives each over 64 loopback connections with pre-built
w1 requests (one ~650 B decision each, unique ids) from a minimal client on the same loop. It counts
the process's CPU time, so other processes on the machine change the wall time but hardly the figure;
the client's share is the same in both, so the difference is the app's own cost per request: its
middlewares (request id, access log, metrics, errors, Host check, auth), guards, body read, validation,
reply. Prints the medians of the interleaved repeats.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web

from cavra_ingest.http import logs
from cavra_ingest.http.app import create_app
from cavra_ingest.http.keys import SINK_KEY
from cavra_ingest.settings import Settings

from .noop_server import post as noop_post
from .null_sink_server import NullSink

CONNECTIONS = 64
OUTCOMES = ["allow"] * 4 + ["warn", "audit_only", "block", "require_approval"]


def decision(rng: random.Random, serial: int) -> bytes:
    """A w1 decision shaped like bench/lua/decisions.lua's."""
    session = rng.randrange(5000)
    agent = session % 300
    ident = f"{rng.getrandbits(64):016x}-{serial:08x}"
    now = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    return json.dumps(
        {
            "decision": rng.choice(OUTCOMES),
            "session_id": f"sess-{session:05d}",
            "decision_id": ident,
            "timestamp": f"{now}.{rng.randrange(10**6):06d}Z",
            "agent_id": f"agent-{agent:03d}",
            "actor": "ai-agent",
            "repository": f"acme/repo-{agent % 40:02d}",
            "action_type": rng.choice(["read_file", "write_file", "shell", "http_request", "mcp_call"]),
            "target": f"src/module_{rng.randrange(10000):04d}/handler.py",
            "requested_operation": "edit file and run tests",
            "policy_pack": "cavra-ai-agent-baseline",
            "rule_id": f"runtime.fs.write.{rng.randrange(100):02d}",
            "severity": rng.choice(["low", "low", "medium", "high", "critical"]),
            "reason": "write inside the repository working tree is allowed for this agent role",
            "evidence_refs": [f"ev://runs/{ident}/step-{rng.randrange(1, 51)}"],
            "correlation_id": f"corr-{ident}",
            "tool_name": "editor",
            "labels": {"env": "ci", "team": "platform"},
        },
        separators=(",", ":"),
    ).encode()


def requests(count: int, port: int) -> list[bytes]:
    rng = random.Random(count)
    out = []
    for serial in range(count):
        body = decision(rng, serial)
        head = (
            f"POST /decisions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        out.append(head.encode() + body)
    return out


async def client(port: int, queue: list[bytes], statuses: dict[int, int]) -> None:
    """One keep-alive connection: send a request, read its whole response, repeat while any are left."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while queue:
            writer.write(queue.pop())
            status = int((await reader.readline()).split()[1])
            length = 0
            while (line := await reader.readline()) != b"\r\n":
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


async def drive(app: web.Application, count: int, port: int) -> dict[str, Any]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        warm = requests(500, port)
        await asyncio.gather(*(client(port, warm, {}) for _ in range(CONNECTIONS)))
        queue = requests(count, port)
        statuses: dict[int, int] = {}
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(client(port, queue, statuses) for _ in range(CONNECTIONS)))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        await runner.cleanup()
    return {"cpu_us_per_request": cpu * 1e6 / count, "requests_per_s": count / wall, "statuses": statuses}


def noop_app() -> web.Application:
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post("/decisions", noop_post)
    return app


def null_sink_app(db: Path, port: int) -> web.Application:
    settings = Settings.from_env(activity_db=str(db), port=port)
    app = create_app(settings)

    async def null_sink(app: web.Application) -> AsyncIterator[None]:
        app[SINK_KEY] = NullSink()  # type: ignore[assignment]
        yield

    app.cleanup_ctx.append(null_sink)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--port", type=int, default=int(os.environ.get("CAVRA_BENCH_PORT", "8097")) + 1)
    args = parser.parse_args()
    import uvloop

    settings = Settings.from_env()
    # The access log as `serve` writes it, to a file as under a service manager (not to a terminal).
    log_file = open(os.devnull, "w")  # noqa: SIM115
    logs.configure(settings.server.log_format, settings.server.log_level, stream=log_file)
    noop, app = [], []
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "loopcost.db"
        for _ in range(args.repeats):
            noop.append(uvloop.run(drive(noop_app(), args.requests, args.port)))
            app.append(uvloop.run(drive(null_sink_app(db, args.port), args.requests, args.port)))
            print(
                f"noop {noop[-1]['cpu_us_per_request']:.1f} µs/req, app {app[-1]['cpu_us_per_request']:.1f} µs/req "
                f"(statuses {app[-1]['statuses']})",
                flush=True,
            )
    base = statistics.median(r["cpu_us_per_request"] for r in noop)
    head = statistics.median(r["cpu_us_per_request"] for r in app)
    print(
        f"median: noop {base:.1f} µs/req, app without store {head:.1f} µs/req, app's own cost {head - base:.1f} µs/req"
    )


if __name__ == "__main__":
    main()
