"""The audit log's cost: store write throughput with and without it (same run, alternating rounds), its storage
per decision, and proof and checkpoint latency on a log of many leaves.

`make bench-audit` (LEAVES=N for the proof log's size). Writes bench/results/audit-log.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import msgspec

from cavra_ingest.auditlog.log import TILE, AuditLog
from cavra_ingest.auditlog.notes import Signer
from cavra_ingest.auditlog.tables import SqliteLog
from cavra_ingest.core.models import DecisionIn, normalize
from cavra_ingest.store.migrate import apply_migrations
from cavra_ingest.store.sqlite.store import SqliteStore

from .rows import decision

DECODER = msgspec.json.Decoder(DecisionIn)
RESULTS = Path(__file__).parent / "results"


def batches(seed: int, batch: int, count: int) -> list[list[object]]:
    rng = random.Random(seed)
    return [
        [normalize(DECODER.decode(msgspec.json.encode(decision(rng, 5000, 300))), []) for _ in range(batch)]
        for _ in range(count)
    ]


async def write_rate(path: Path, audit: bool, work: list[list[object]]) -> tuple[float, float, int]:
    """Decisions per second through SqliteStore.write (one transaction per batch), CPU µs per decision (this
    process, every thread: steadier than wall time on a shared machine), and the file's bytes."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    store = SqliteStore(path, synchronous="FULL", audit_log=audit)
    await store.open()
    try:
        start, cpu = time.perf_counter(), time.process_time()
        for items in work:
            await store.write(items)  # type: ignore[arg-type]
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        assert store._writer is not None
        store._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        await store.close()
    decisions = sum(map(len, work))
    return decisions / elapsed, cpu * 1e6 / decisions, os.path.getsize(path)


async def throughput(tmp: Path, batch: int, decisions: int, rounds: int) -> dict[str, float]:
    count = max(1, decisions // batch)
    on, off, bytes_on, bytes_off, cpu_on, cpu_off = [], [], [], [], [], []
    for r in range(rounds):
        # Fresh records each round (ids are the idempotency key); on and off alternate, in both orders.
        for audit in (True, False) if r % 2 == 0 else (False, True):
            rate, cpu, size = await write_rate(tmp / f"t-{audit}.db", audit, batches(r, batch, count))
            (on if audit else off).append(rate)
            (cpu_on if audit else cpu_off).append(cpu)
            (bytes_on if audit else bytes_off).append(size)
    return {
        "batch": batch,
        "decisions_per_round": count * batch,
        "rounds": rounds,
        "with_log_per_s": statistics.median(on),
        "without_log_per_s": statistics.median(off),
        "ratio": statistics.median(on) / statistics.median(off),
        "cpu_us_per_decision_with_log": statistics.median(cpu_on),
        "cpu_us_per_decision_without_log": statistics.median(cpu_off),
        "cpu_ratio": statistics.median(cpu_off) / statistics.median(cpu_on),
        "log_bytes_per_decision": (statistics.median(bytes_on) - statistics.median(bytes_off)) / (count * batch),
    }


async def proofs(tmp: Path, leaves: int, samples: int) -> dict[str, float]:
    """Proof and checkpoint latency on a log of `leaves` leaves (leaf rows written directly: only the log is read)."""
    path = tmp / "proofs.db"
    apply_migrations(path)
    conn = sqlite3.connect(path)
    with conn:
        conn.executemany(
            "INSERT INTO audit_leaves VALUES (?, ?, ?)",
            ((i, f"dec-{i}", hashlib.sha256(i.to_bytes(8, "big")).digest()) for i in range(leaves)),
        )
    conn.close()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    audit = AuditLog(SqliteLog(path, 5000), Signer("bench", Ed25519PrivateKey.generate()), "bench")
    try:
        start = time.perf_counter()
        await audit.make_checkpoint()
        first_checkpoint = time.perf_counter() - start
        rng = random.Random(1)
        inclusion, consistency = [], []
        for _ in range(samples):
            index = rng.randrange(leaves)
            start = time.perf_counter()
            path_hashes = await audit.inclusion(index, leaves)
            inclusion.append(time.perf_counter() - start)
            first = rng.randrange(1, leaves)
            start = time.perf_counter()
            await audit.consistency(first, leaves)
            consistency.append(time.perf_counter() - start)
        # A steady-state checkpoint: one second's worth of new leaves (1000) on top of the log.
        conn = sqlite3.connect(path)
        with conn:
            conn.executemany(
                "INSERT INTO audit_leaves VALUES (?, ?, ?)",
                ((i, f"dec-{i}", hashlib.sha256(i.to_bytes(8, "big")).digest()) for i in range(leaves, leaves + 1000)),
            )
        conn.close()
        start = time.perf_counter()
        await audit.make_checkpoint()
        checkpoint = time.perf_counter() - start
    finally:
        await audit.db.close()

    def ms(values: list[float], q: float) -> float:
        return sorted(values)[int(q * (len(values) - 1))] * 1000

    return {
        "leaves": leaves,
        "samples": samples,
        "proof_path_length": len(path_hashes),
        "inclusion_ms_p50": ms(inclusion, 0.5),
        "inclusion_ms_p99": ms(inclusion, 0.99),
        "consistency_ms_p50": ms(consistency, 0.5),
        "consistency_ms_p99": ms(consistency, 0.99),
        "checkpoint_after_1000_new_leaves_ms": checkpoint * 1000,
        "first_checkpoint_over_all_leaves_s": first_checkpoint,
        "cached_subtrees": leaves // TILE * 2,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, nargs="+", default=[32, 1000])
    parser.add_argument("--decisions", type=int, default=20_000, help="decisions written per round and batch size")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--leaves", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        writes = [asyncio.run(throughput(Path(tmp), b, args.decisions, args.rounds)) for b in args.batch]
        for row in writes:
            print(json.dumps(row))
        latency = asyncio.run(proofs(Path(tmp), args.leaves, args.samples))
        print(json.dumps(latency))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "audit-log.json").write_text(json.dumps({"writes": writes, "proofs": latency}, indent=2) + "\n")
    lines = [
        "| batch | with log /s | without /s | ratio | CPU µs/dec. with/without | CPU ratio | log bytes/decision |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {w['batch']} | {w['with_log_per_s']:.0f} | {w['without_log_per_s']:.0f} | {w['ratio']:.3f} |"
        f" {w['cpu_us_per_decision_with_log']:.1f} / {w['cpu_us_per_decision_without_log']:.1f} |"
        f" {w['cpu_ratio']:.3f} | {w['log_bytes_per_decision']:.0f} |"
        for w in writes
    ]
    lines += ["", "| proofs at leaves | value |", "|---|---|"]
    lines += [f"| {key} | {value:.3f} |" if isinstance(value, float) else f"| {key} | {value} |"
              for key, value in latency.items()]  # fmt: skip
    (RESULTS / "audit-log.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
