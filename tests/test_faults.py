"""Fault tests on a real server process and a real SQLite file: crash, stop, store faults, overload, slow clients."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .procs import Server, acknowledged, check_file

ROUNDS = int(os.environ.get("CAVRA_FAULT_ROUNDS", "3"))
SESSIONS = [f"sess-crash-{n}" for n in range(6)]
OUTCOMES = ["allow", "block", "require_approval", "warn", "audit_only"]
_ids = itertools.count()

pytestmark = pytest.mark.timeout(60 + 20 * ROUNDS)


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
    url: str, prefix: str, seed: int, stop: asyncio.Event, acked: set[str], statuses: dict[Any, int]
) -> None:
    """Post singles and batches (with some replays) until stopped; record what was acknowledged."""
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
                continue
            acked.update(ids)
            mine.extend(d for d in sent if d["decision_id"] in ids)


async def test_kill_9_loses_nothing_acknowledged(tmp_path: Path) -> None:
    """SIGKILL under load, restart on the same file: every acknowledged decision is there once, summaries agree."""
    db = tmp_path / "activity.db"
    rng = random.Random(os.environ.get("CAVRA_FAULT_SEED", "5"))
    acked: set[str] = set()
    statuses: dict[Any, int] = {}
    for round_no in range(ROUNDS):
        server = Server(db)
        await server.start()
        before = len(acked)
        stop = asyncio.Event()
        workers = [
            asyncio.create_task(load(server.url, f"r{round_no}w{w}", rng.randrange(1 << 30), stop, acked, statuses))
            for w in range(4)
        ]
        await asyncio.sleep(rng.uniform(0.4, 1.5))  # the fault's random moment, not a wait for a result
        server.kill()
        stop.set()
        await asyncio.gather(*workers)
        assert len(acked) > before, f"round {round_no} acknowledged nothing: {statuses}"
        found = check_file(db)
        missing = acked - found["ids"]
        assert not missing, f"round {round_no}: {len(missing)} acknowledged decisions lost"
    assert all(isinstance(k, str) or k in (200, 207) for k in statuses), statuses
    server = Server(db)
    await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{server.url}/decisions", params={"limit": "1"}) as response:
                assert (await response.json())["total"] == len(check_file(db)["ids"])
            for decision_id in random.Random(1).sample(sorted(acked), 50):
                async with http.get(f"{server.url}/decisions/{decision_id}") as response:
                    assert response.status == 200
    finally:
        await server.terminate(timeout=15)
    print(f"crash: {ROUNDS} rounds, {len(acked)} acknowledged decisions verified, responses {statuses}")
