"""Which B-trees a write reads from the file: workload 4's writes through the real store, page reads named.

Opens the store as the server does (page cache sized and warmed at open, audit-log leaves on), writes
`--decisions` random-id decisions in 32-decision transactions (what single posts form), and counts the
writer's read calls from the file per decision (/proc/self/io). With `--trace` the script runs itself
under strace and names the B-tree each page read belongs to (SQLite's dbstat), at open and while writing.
Writes into the given file: use a copy of a pre-loaded one.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec

from cavra_ingest.core.models import DecisionIn, normalize
from cavra_ingest.settings.checks import parse_cache_mb
from cavra_ingest.store.sqlite.store import SqliteStore

from .rows import decision

DECODER = msgspec.json.Decoder(DecisionIn)
# Opened (and missing) only to mark in strace's output where the writes begin.
MARK = "/nonexistent/cavra-pagereads-writes-begin"


def io_counts() -> dict[str, int]:
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return {key: int(value) for key, value in fields.items()}


async def write(
    path: Path, decisions: int, batch: int, cache_mb: int | None, autocheckpoint: int = 0
) -> dict[str, float]:
    store = SqliteStore(path, audit_log=True, cache_mb=cache_mb)
    started = time.perf_counter()
    await store.open()
    if autocheckpoint:
        assert store._writer is not None
        store._writer.execute(f"PRAGMA wal_autocheckpoint={max(autocheckpoint, 0)}")
    opened_s = time.perf_counter() - started
    rng = random.Random(int(time.time()))
    batches = [
        [normalize(DECODER.decode(msgspec.json.encode(decision(rng, 5000, 300))), []) for _ in range(batch)]
        for _ in range(max(1, decisions // batch))
    ]
    try:
        try:
            os.close(os.open(MARK, os.O_RDONLY))
        except OSError:
            pass
        before, times, wall = io_counts(), os.times(), time.perf_counter()
        for items in batches:
            await store.write(items)  # type: ignore[arg-type]
        after = io_counts()
        done, wall = os.times(), time.perf_counter() - wall
        user, system = done.user - times.user, done.system - times.system
    finally:
        await store.close()
    written = len(batches) * batch
    return {
        "decisions": written,
        "open_s": round(opened_s, 2),
        "read_calls_per_decision": round((after["syscr"] - before["syscr"]) / written, 2),
        "disk_kib_per_decision": round((after["read_bytes"] - before["read_bytes"]) / written / 1024, 2),
        "written_kib_per_decision": round((after["wchar"] - before["wchar"]) / written / 1024, 2),
        "cpu_us_per_decision": round((user + system) * 1e6 / written),
        "system_us_per_decision": round(system * 1e6 / written),
        "wall_us_per_decision": round(wall * 1e6 / written),
    }


def page_owners(path: Path, pages: set[int]) -> dict[int, str]:
    """Name the B-tree of each page read (dbstat walks each B-tree but the table's, which is most of the file)."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    owners: dict[int, str] = {}
    try:
        names = [
            row[0]
            for row in con.execute("SELECT name FROM sqlite_master WHERE rootpage > 0 AND name != 'activity_decisions'")
        ]
        for name in names:
            for (pageno,) in con.execute("SELECT pageno FROM dbstat WHERE name = ?", (name,)):
                if pageno in pages:
                    owners[pageno] = name
    finally:
        con.close()
    return owners


def traced(args: argparse.Namespace) -> None:
    """Run the writes under strace; count the page reads of the file per B-tree, at open and while writing."""
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
        cmd = ["strace", "-f", "-e", "trace=openat,pread64", "-o", out.name, sys.executable, "-m", "bench.pagereads"]
        cmd += [str(args.db), "--decisions", str(args.decisions), "--batch", str(args.batch)]
        cmd += ["--cache-mb", args.cache_mb]
        result = subprocess.run(cmd, check=True, capture_output=True, text=True)
        files: dict[str, str] = {}
        phase = "open"
        reads: dict[str, list[int]] = {"open": [], "writes": []}
        other: collections.Counter[str] = collections.Counter()
        for line in out:
            if MARK in line:
                phase = "writes"
                continue
            opened = re.search(r'openat\([^"]*"([^"]+)".*= (\d+)$', line)
            if opened:
                files[opened.group(2)] = Path(opened.group(1)).name
                continue
            read = re.search(r"pread64\((\d+), .*, (\d+), (\d+)\) = (\d+)", line)
            if not read:
                continue
            if files.get(read.group(1)) == args.db.name and int(read.group(2)) == 4096:
                reads[phase].append(int(read.group(3)) // 4096 + 1)
            else:
                other[f"{phase}: {files.get(read.group(1), '?')} ({read.group(2)} bytes)"] += 1
    owners = page_owners(args.db, {page for pages in reads.values() for page in pages})
    report: dict[str, object] = {"untraced": json.loads(result.stdout.strip().splitlines()[-1])}
    for phase, pages in reads.items():
        named = collections.Counter(owners.get(page, "activity_decisions (table) or free") for page in pages)
        report[phase] = {"page_reads": len(pages), "by_btree": dict(named.most_common())}
    report["other_reads"] = dict(other.most_common())
    print(json.dumps(report, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("db", type=Path, help="a copy of a pre-loaded file (it is written)")
    parser.add_argument("--decisions", type=int, default=16_000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--cache-mb", default="auto")
    parser.add_argument(
        "--autocheckpoint", type=int, default=0, help="WAL pages between checkpoints (SQLite's 1000; -1: none)"
    )
    parser.add_argument("--trace", action="store_true", help="name the B-trees read (runs under strace)")
    args = parser.parse_args()
    if args.trace:
        traced(args)
        return
    result = asyncio.run(write(args.db, args.decisions, args.batch, parse_cache_mb(args.cache_mb), args.autocheckpoint))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
