"""Decisions per second through the client from one process, beside arrays of 100 posted directly (same run).

Each phase gets its own server (pinned to the server core, as in `bench.run`) on a fresh SQLite file; this
process is pinned to the load core. Writes bench/results/client.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from cavra_ingest.client import Client

from .run import LOAD_CORE, RESULTS, Server, count_rows

OUTCOMES = ("allow", "allow", "allow", "allow", "warn", "audit_only", "block", "require_approval")
ACTIONS = ("read_file", "write_file", "shell", "http_request", "mcp_call")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_decision(rng: random.Random) -> dict[str, Any]:
    """A decision like the load generator's (bench/lua/decisions.lua), without id or timestamp."""
    return {
        "decision": rng.choice(OUTCOMES),
        "session_id": f"sess-{rng.randrange(5000):05d}",
        "agent_id": f"agent-{rng.randrange(300):03d}",
        "repository": "acme/payments",
        "action_type": rng.choice(ACTIONS),
        "target": f"src/module_{rng.randrange(1000)}.py",
        "severity": "low",
        "rule_id": "fs.read",
        "reason": "benchmark",
    }


def start_server(db: Path) -> Server:
    port = free_port()
    return Server(
        ["-m", "cavra_ingest", "serve", "--port", str(port)],
        {"CAVRA_ACTIVITY_DB": str(db)},
        port=port,
        log_path=db.with_suffix(".log"),
    )


async def direct_arrays(url: str, total: int, per_request: int, connections: int) -> float:
    """POST pre-encoded JSON arrays with random ids from `connections` loops; return decisions/s."""
    rng = random.Random(1)
    bodies = []
    for _ in range(total // per_request):
        batch = [make_decision(rng) | {"decision_id": uuid.uuid4().hex} for _ in range(per_request)]
        bodies.append(msgspec.json.encode(batch))
    pending = iter(bodies)
    async with aiohttp.ClientSession(headers={"Content-Type": "application/json"}) as http:

        async def loop() -> None:
            for body in pending:
                while True:
                    async with http.post(f"{url}/decisions", data=body) as response:
                        await response.read()
                        if response.status == 200:
                            break

        start = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(connections)))
        return len(bodies) * per_request / (time.perf_counter() - start)


async def through_client(url: str, total: int, batch_size: int, concurrency: int) -> tuple[float, dict[str, Any]]:
    """record() `total` decisions (ids and timestamps made by the client) and flush; return decisions/s."""
    rng = random.Random(2)
    decisions = [make_decision(rng) for _ in range(total)]
    start = time.perf_counter()
    async with Client(url, batch_size=batch_size, concurrency=concurrency) as client:
        for decision in decisions:
            await client.record(decision)
        await client.flush()
        rate = total / (time.perf_counter() - start)
    return rate, vars(client.stats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--decisions", type=int, default=100_000, help="decisions per phase (default 100,000)")
    parser.add_argument("--batch-size", type=int, default=500, help="the client's batch size (default 500)")
    parser.add_argument("--concurrency", type=int, default=2, help="the client's requests in flight (default 2)")
    parser.add_argument("--connections", type=int, default=4, help="direct phase: concurrent posters (default 4)")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(LOAD_CORE)})
    figures: dict[str, Any] = {"decisions": args.decisions, "args": vars(args)}
    with tempfile.TemporaryDirectory() as tmp:
        # client100: the client with the direct phase's request size, so the two differ only in the client.
        for phase, batch in (("direct", 100), ("client100", 100), ("client", args.batch_size)):
            db = Path(tmp) / f"{phase}.db"
            server = start_server(db)
            url = f"http://127.0.0.1:{server.port}"
            try:
                if phase == "direct":
                    rate = asyncio.run(direct_arrays(url, args.decisions, batch, args.connections))
                else:
                    rate, stats = asyncio.run(through_client(url, args.decisions, batch, args.concurrency))
                    figures[f"{phase}_stats"] = stats
            finally:
                server.stop()
            figures[f"{phase}_per_s"] = round(rate)
            figures[f"{phase}_rows"] = count_rows(db)
    figures["client_vs_direct"] = round(figures["client_per_s"] / figures["direct_per_s"], 2)
    figures["client100_vs_direct"] = round(figures["client100_per_s"] / figures["direct_per_s"], 2)
    figures["loadavg_after"] = os.getloadavg()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "client.json").write_text(json.dumps(figures, indent=2) + "\n")
    table = (
        "| path | decisions/s | rows stored |\n|---|---|---|\n"
        f"| arrays of 100 posted directly ({args.connections} connections, random ids) "
        f"| {figures['direct_per_s']:,} | {figures['direct_rows']:,} |\n"
        f"| `Client.record()` + `flush()` (batch 100, {args.concurrency} in flight, UUIDv7 ids) "
        f"| {figures['client100_per_s']:,} | {figures['client100_rows']:,} |\n"
        f"| `Client.record()` + `flush()` (batch {args.batch_size}, {args.concurrency} in flight, UUIDv7 ids) "
        f"| {figures['client_per_s']:,} | {figures['client_rows']:,} |\n"
    )
    command = " ".join(["python -m bench.client_bench", *sys.argv[1:]])
    load = ", ".join(f"{value:.2f}" for value in figures["loadavg_after"])
    note = f"\nLoad average after the run: {load} (other work on the machine shows up here).\n"
    (RESULTS / "client.md").write_text(f"# Client throughput\n\n`{command}`\n\n{table}{note}")
    print(table)


if __name__ == "__main__":
    main()
