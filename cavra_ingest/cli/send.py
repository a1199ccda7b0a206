"""`cavra-ingest send FILE|-`: post a file of decisions (NDJSON or a JSON array) through the client."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from cavra_ingest.client import Client, Stats
from cavra_ingest.core.progress import Progress

TICK_S = 0.1
MAX_ERRORS_SHOWN = 20
DEFAULT_URL = "http://127.0.0.1:8080"


def read_records(source: str) -> tuple[int, Iterator[Any]]:
    """Return the number of records in the input and the records, decoded one at a time for NDJSON."""
    data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    if data.lstrip()[:1] == b"[":
        records = msgspec.json.decode(data)
        return len(records), iter(records)
    lines = [line for line in data.split(b"\n") if line.strip()]
    return len(lines), (decode_line(line) for line in lines)


def decode_line(line: bytes) -> Any:
    try:
        return msgspec.json.decode(line)
    except msgspec.DecodeError as exc:
        return exc


async def tick(progress: Progress, stats: Stats) -> None:
    """Redraw the progress from the client's counts until cancelled."""
    while True:
        await asyncio.sleep(TICK_S)
        progress.set(stats.stored + stats.failed)


async def send(source: str, url: str | None, token: str | None, spool: str | None, batch_size: int) -> int:
    """Send every record, wait for the server's answers, print counts; 0 when all are stored."""
    url = url or os.environ.get("CAVRA_URL") or DEFAULT_URL
    total, records = read_records(source)
    shown = unreadable = 0

    def on_error(record: dict[str, Any], status: int, error: dict[str, Any]) -> None:
        nonlocal shown
        shown += 1
        if shown <= MAX_ERRORS_SHOWN:
            print(f"{record.get('decision_id')}: {status} {error.get('detail')}", file=sys.stderr)

    # No client-side timestamps: a backfill's records are not from now, and a file sent twice stays duplicates
    # (the server leaves the fields it fills in out of the comparison).
    options: dict[str, Any] = {"token": token, "spool": spool, "batch_size": batch_size, "stamp_time": False}
    async with Client(url, on_error=on_error, **options) as client:
        stats = client.stats
        progress = Progress(
            "send",
            total,
            detail=lambda: f"(created {stats.created}, duplicate {stats.duplicates}, failed {stats.failed})",
        )
        ticker = asyncio.create_task(tick(progress, stats))
        try:
            for index, record in enumerate(records):
                if not isinstance(record, dict):
                    unreadable += 1
                    print(f"input[{index}]: not a JSON object: {record}", file=sys.stderr)
                    continue
                await client.record(record)
            await client.flush()
        finally:
            ticker.cancel()
        progress.set(stats.stored + stats.failed)
        progress.close()
    failed = stats.failed + unreadable
    print(
        f"sent {stats.recorded}: created {stats.created}, duplicate {stats.duplicates}, failed {failed}"
        f" ({stats.requests} requests, {stats.retries} retries)"
    )
    return 0 if failed == 0 else 1
