"""Power-loss campaigns: a real server on the lossy filesystem, load, a power cut at a random moment, a
restart on what survived, and a count of every acknowledged decision that is missing, doubled or corrupt.

`python -m tests.powerloss --rounds 100` (or `make powerloss`) runs every target and writes
bench/results/powerloss.json; `tests/store/test_powerloss.py` runs a few rounds of each in CI.

Targets: `sqlite-full` (the default, synchronous=FULL: nothing acknowledged may be lost), `sqlite-normal`
(synchronous=NORMAL: loss is expected, which shows the harness can see it), `json` (the pilot store).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import decision
from tests.lossyfs.mount import Mount
from tests.procs import Server, acknowledged

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "powerloss.json"
SENDERS, BATCH = 4, 10
_ids = itertools.count()


def sqlite_target(synchronous: str) -> dict[str, Any]:
    return {"file": "activity.db", "env": {"CAVRA_SQLITE_SYNCHRONOUS": synchronous}, "stored": stored_sqlite}


def stored_sqlite(path: Path) -> tuple[list[str], bool]:
    """The decision ids a SQLite file holds after recovery, and whether it is sound (integrity, summaries)."""
    from tests.procs import check_file

    if not path.exists():
        return [], True  # never durable: everything in it was unacknowledged or is counted as lost
    try:
        check_file(path)
        with sqlite3.connect(path) as db:
            return [row[0] for row in db.execute("SELECT decision_id FROM activity_decisions")], True
    except (AssertionError, sqlite3.DatabaseError):
        return [], False


def stored_json(path: Path) -> tuple[list[str], bool]:
    if not path.exists():
        return [], True
    try:
        data = json.loads(path.read_bytes())
        return [d["decision_id"] for d in data.get("decisions", [])], True
    except (ValueError, KeyError, TypeError):
        return [], False


TARGETS: dict[str, dict[str, Any]] = {
    "sqlite-full": sqlite_target("FULL"),
    "sqlite-normal": sqlite_target("NORMAL"),
    "json": {"file": "activity.json", "env": {}, "stored": stored_json},
}


async def load(url: str, acked: set[str], stop: asyncio.Event) -> None:
    """Post batches of new decisions until stopped; keep every id a 2xx acknowledged."""

    async def sender(n: int) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            while not stop.is_set():
                body = [decision(decision_id=f"pl-{next(_ids)}", session_id=f"s-{n}-{j % 3}") for j in range(BATCH)]
                try:
                    async with http.post(f"{url}/decisions", json=body) as response:
                        reply = await response.json(content_type=None)
                        acked.update(acknowledged(response.status, reply, body))
                except (aiohttp.ClientError, TimeoutError, ValueError):
                    await asyncio.sleep(0.02)  # the power is gone: nothing more is acknowledged

    await asyncio.gather(*(sender(n) for n in range(SENDERS)))


async def one_round(name: str, root: Path, rng: random.Random) -> dict[str, int]:
    target = TARGETS[name]
    mount = Mount(root).start()
    server = Server(mount.path / target["file"], env={**target["env"], "CAVRA_UVLOOP": "0"}, cwd=ROOT)
    acked: set[str] = set()
    try:
        await server.start()
        stop = asyncio.Event()
        task = asyncio.ensure_future(load(server.url, acked, stop))
        await asyncio.sleep(rng.uniform(0.3, 1.5))
        mount.cut("prefix" if rng.random() < 0.5 else "drop", rng.randrange(1 << 30))
        server.kill()
        stop.set()
        await task
    finally:
        server.kill()
        mount.stop()
    # Restart on what survived: the real server opens (and recovers) the file, then it is counted.
    survivor = mount.backing / target["file"]
    corrupt = 0
    if survivor.exists():
        restarted = Server(survivor, env={"CAVRA_UVLOOP": "0"}, cwd=ROOT)
        try:
            await restarted.start()
        except RuntimeError:
            corrupt = 1
        finally:
            await restarted.terminate(10) if restarted.proc is not None and restarted.proc.poll() is None else None
    ids, sound = target["stored"](survivor)
    return {
        "acked": len(acked),
        "lost": len(acked - set(ids)),
        "duplicated": len(ids) - len(set(ids)),
        "corrupt": corrupt or int(not sound),
    }


async def campaign(names: list[str], rounds: Callable[[str], int], seed: int) -> dict[str, dict[str, int]]:
    rng = random.Random(seed)
    results: dict[str, dict[str, int]] = {}
    with tempfile.TemporaryDirectory(prefix="cavra-powerloss-") as tmp:
        for name in names:
            total = {"rounds": 0, "acked": 0, "lost": 0, "duplicated": 0, "corrupt": 0}
            for n in range(rounds(name)):
                outcome = await one_round(name, Path(tmp) / f"{name}-{n}", rng)
                total["rounds"] += 1
                for key, value in outcome.items():
                    total[key] += value
            results[name] = total
    return results


def table(results: dict[str, dict[str, int]]) -> str:
    lines = ["| target | rounds | acked | lost | duplicated | corrupt |", "|---|---|---|---|---|---|"]
    lines += [f"| {name} | {r['rounds']} | {r['acked']:,} | {r['lost']:,} | {r['duplicated']} | {r['corrupt']} |"
              for name, r in results.items()]  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=100, help="rounds per target")
    parser.add_argument("--only", help="comma-separated targets (default: all)")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--no-write", action="store_true", help="do not write bench/results/powerloss.json")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(TARGETS)
    results = asyncio.run(campaign(names, lambda _: args.rounds, args.seed))
    print(table(results))
    if not args.no_write:
        RESULTS.write_text(json.dumps({"seed": args.seed, **results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
