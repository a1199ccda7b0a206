"""Write amplification through the real store: WAL bytes and CPU per decision at a given batch size.

Deterministic where throughput on a shared machine is not: it counts what each transaction writes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from cavra_ingest.core.models import DecisionIn, normalize
from cavra_ingest.store.sqlite.store import SqliteStore

from .ceiling import COMPOSITE_INDEX
from .rows import decision

DECODER = msgspec.json.Decoder(DecisionIn)


def fresh(path: Path, template: Path | None) -> None:
    """Remove the scratch file and its WAL; copy the template in its place when there is one."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    if template is not None:
        shutil.copyfile(template, path)


async def measure(
    path: Path,
    batch: int,
    transactions: int,
    warmup: int,
    *,
    composite_index: bool = False,
    synchronous: str = "FULL",
    page_size: int = 0,
    audit_log: bool = False,
    prepare: Callable[[sqlite3.Connection], None] | None = None,
    template: Path | None = None,
    workspaces: int = 0,
) -> dict[str, float]:
    """Commit warmup batches, then count WAL growth over `transactions` batches with checkpoints off.

    `template`: a (pre-loaded) file to start from, copied, instead of an empty one. `workspaces`: give each
    decision one of that many workspaces (bench/rows.py's decisions have none), so what is counted per
    workspace is paid for too.
    """
    fresh(path, template)
    if page_size:
        # Only a new file takes a page size, so it is set before the migrations create the tables.
        with sqlite3.connect(path) as con:
            con.execute(f"PRAGMA page_size={page_size}")
            con.execute("PRAGMA journal_mode=WAL")
    store = SqliteStore(path, synchronous=synchronous, audit_log=audit_log)
    await store.open()
    db = store._writer
    assert db is not None
    rng = random.Random(7)

    def posted() -> dict[str, object]:
        fields = decision(rng, 5000, 300)
        if workspaces:
            fields["workspace_id"] = f"ws-{rng.randrange(workspaces)}"
        return fields

    def accepted_batch() -> list[object]:
        return [normalize(DECODER.decode(msgspec.json.encode(posted())), []) for _ in range(batch)]

    try:
        if composite_index:
            db.execute(COMPOSITE_INDEX)
        if prepare is not None:
            prepare(db)
        for _ in range(warmup):
            await store.write(accepted_batch())  # type: ignore[arg-type]
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.execute("PRAGMA wal_autocheckpoint=0")
        cpu, wall = 0.0, 0.0
        for _ in range(transactions):
            items = accepted_batch()
            start, start_wall = time.process_time(), time.perf_counter()
            await store.write(items)  # type: ignore[arg-type]
            cpu += time.process_time() - start
            wall += time.perf_counter() - start_wall
        wal = os.path.getsize(f"{path}-wal")
    finally:
        await store.close()
    decisions = batch * transactions
    return {
        "batch": batch,
        "wal_kib_per_tx": wal / transactions / 1024,
        "wal_kib_per_decision": wal / decisions / 1024,
        "cpu_us_per_decision": cpu * 1e6 / decisions,
        "wall_us_per_decision": wall * 1e6 / decisions,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("db", type=Path)
    parser.add_argument("--batch", type=int, nargs="+", default=[32, 100, 1000])
    parser.add_argument("--decisions", type=int, default=20_000, help="decisions measured per batch size")
    parser.add_argument("--composite-index", action="store_true")
    parser.add_argument("--synchronous", default="FULL")
    parser.add_argument("--page-size", type=int, default=0, help="page size of the new file (default SQLite's)")
    parser.add_argument("--audit-log", action="store_true", help="write audit-log leaves (the server's default)")
    parser.add_argument("--template", type=Path, help="start from a copy of this pre-loaded file (bench/preload.py)")
    parser.add_argument("--workspaces", type=int, default=0, help="give each decision one of this many workspaces")
    args = parser.parse_args()
    for batch in args.batch:
        transactions = max(1, args.decisions // batch)
        result = asyncio.run(
            measure(
                args.db,
                batch,
                transactions,
                transactions,
                composite_index=args.composite_index,
                synchronous=args.synchronous,
                page_size=args.page_size,
                audit_log=args.audit_log,
                template=args.template,
                workspaces=args.workspaces,
            )
        )
        print(json.dumps(result))


if __name__ == "__main__":
    main()
