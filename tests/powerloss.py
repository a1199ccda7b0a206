"""Power-loss campaigns: the real server on the lossy filesystem, load, a cut at a random moment, a restart.

`python -m tests.powerloss --rounds N --other-rounds M` runs every target and writes bench/results/powerloss.json
as `{target: {rounds, acked, lost, duplicated, corrupt}}`. A round starts `cavra-ingest serve` with its store on
the mount, posts with a few concurrent clients, records every acknowledged id, cuts the power (the FUSE process
is killed, so everything not fsynced is gone, then the server), remounts and restarts on what survived.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from tests.auditing import consistency_ok, open_checkpoint, unb64
from tests.lossyfs import Mount
from tests.procs import Server, check_file
from tests.web.test_faults import load, read_json_store

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results" / "powerloss.json"


@dataclass
class Tally:
    rounds: int = 0
    acked: int = 0
    lost: int = 0
    duplicated: int = 0
    corrupt: int = 0
    forks: int = 0
    checkpoints: int = 0  # signed checkpoints seen before a cut and checked after it (audit-log)
    stalls: int = 0  # jetstream-*: rounds whose first worker after the restart stopped draining (restarted)


class LoggedServer(Server):
    """A server whose log lives off the lossy mount (it would vanish with the cut)."""

    log_dir: Path | None = None

    @property
    def log_path(self) -> Path:
        assert self.log_dir is not None
        return self.log_dir / "serve.log"


@dataclass
class Target:
    name: str
    filename: str
    env: dict[str, str]
    audit: bool = False
    torn: bool = False  # the lossy filesystem's torn-write model (unsynced writes partly on disk at the cut)

    def stored(self, path: Path) -> tuple[set[str], int]:
        """The ids in the surviving store and how many are stored twice; raise AssertionError when corrupt."""
        if path.suffix == ".json":
            if not path.exists():  # the JSON store writes its file with the first decision
                return set(), 0
            data = msgspec.json.decode(path.read_bytes())
            ids = [d["decision_id"] for d in data["decisions"]]
            read_json_store(path)  # parses whole, summaries equal recounts
            return set(ids), len(ids) - len(set(ids))
        ids = check_file(path)["ids"]
        conn = sqlite3.connect(path)
        try:
            (rows,) = conn.execute("SELECT count(*) FROM activity_decisions").fetchone()
        finally:
            conn.close()
        return ids, rows - len(ids)


TARGETS = {
    "sqlite-full": Target("sqlite-full", "activity.db", {"CAVRA_SQLITE_SYNCHRONOUS": "FULL"}),
    "sqlite-full-torn": Target("sqlite-full-torn", "activity.db", {"CAVRA_SQLITE_SYNCHRONOUS": "FULL"}, torn=True),
    "sqlite-normal": Target("sqlite-normal", "activity.db", {"CAVRA_SQLITE_SYNCHRONOUS": "NORMAL"}),
    "json": Target("json", "activity.json", {}),
    "audit-log": Target("audit-log", "activity.db", {"CAVRA_CHECKPOINT_INTERVAL_S": "0.1"}, audit=True),
    "client-spool": Target("client-spool", "spool.db", {}),
    "postgres": Target("postgres", "", {}),  # tests/powerloss_pg.py
    "jetstream-default": Target("jetstream-default", "", {}),  # tests/powerloss_js.py
    "jetstream-always": Target("jetstream-always", "", {}),
}


async def watch_checkpoints(url: str, stop: asyncio.Event, seen: dict[int, bytes]) -> None:
    """Collect every signed checkpoint the server hands out until the cut: {size: root}."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        try:
            async with http.get(f"{url}/log/public-key") as response:
                vkey = (await response.text()).strip()
        except (TimeoutError, aiohttp.ClientError):
            return
        while not stop.is_set():
            try:
                async with http.get(f"{url}/log/checkpoint") as response:
                    if response.status == 200:
                        _, size, root = open_checkpoint(await response.text(), vkey)
                        seen[size] = root
            except (TimeoutError, aiohttp.ClientError):
                pass
            await asyncio.sleep(0.05)


async def forks_after(url: str, seen: dict[int, bytes]) -> int:
    """Checkpoints signed before the cut that the restarted log cannot prove itself an extension of."""
    if not seen:
        return 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        async with http.get(f"{url}/log/public-key") as response:
            vkey = (await response.text()).strip()
        deadline = time.monotonic() + 20
        while True:
            async with http.get(f"{url}/log/checkpoint") as response:
                if response.status == 200:
                    _, size, root = open_checkpoint(await response.text(), vkey)
                    break
            if time.monotonic() > deadline:
                return len(seen)
            await asyncio.sleep(0.1)
        forks = 0
        for first, first_root in seen.items():
            if first == 0:
                continue  # the empty tree is a prefix of every tree
            if first > size:
                forks += 1  # the log is shorter than a checkpoint it signed
                print(f"  fork: checkpoint of size {first} signed before the cut, log now {size}", flush=True)
                continue
            async with http.get(f"{url}/log/consistency", params={"first": first, "second": size}) as response:
                if response.status != 200:
                    forks += 1
                    print(f"  fork: no proof from {first} to {size}: {await response.text()}", flush=True)
                    continue
                path = unb64((await response.json())["consistency"])
            if not consistency_ok(first, size, first_root, root, path):
                forks += 1
                print(f"  fork: the proof from {first} to {size} does not verify", flush=True)
        return forks


def server_on(path: Path, target: Target, logs: Path) -> LoggedServer:
    server = LoggedServer(path, env=target.env)
    server.log_dir = logs
    return server


CLIENT_SCRIPT = Path(__file__).resolve().parent / "client_script.py"


async def run_client(url: str, spool: Path, count: int, reported: set[str]) -> asyncio.subprocess.Process:
    """Start tests/client_script.py; every id it prints, record() returned for (the spool holds it)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(CLIENT_SCRIPT),
        url,
        str(spool),
        str(count),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )

    async def read() -> None:
        assert proc.stdout is not None
        async for line in proc.stdout:
            text = line.decode().strip()
            if text and not text.startswith("{") and text != "None":
                reported.add(text)

    proc.reader = asyncio.create_task(read())  # type: ignore[attr-defined]
    return proc


async def run_client_spool(rounds: int, rng: random.Random, work: Path) -> Tally:
    """The client's host loses power; the server (off the mount) does not. Every id record() returned for is
    delivered once the client restarts on its surviving spool."""
    tally = Tally()
    mount_dir, backing, logs = work / "mnt", work / "backing", work / "logs"
    for folder in (backing, logs):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    server = server_on(logs / "server.db", TARGETS["sqlite-full"], logs)
    await server.start()
    mount = Mount(mount_dir, backing)
    reported: set[str] = set()
    try:
        for round_no in range(rounds + 1):
            mount.start()
            final = round_no == rounds
            before = len(reported)
            proc = await run_client(server.url, mount_dir / "spool.db", 0 if final else 3000, reported)
            try:
                if final:
                    await asyncio.wait_for(proc.wait(), timeout=60)
                    tally.corrupt += proc.returncode != 0
                else:
                    await asyncio.sleep(rng.uniform(0.3, 1.5))  # the cut's random moment
                    mount.cut()
                    proc.kill()
                    tally.rounds += 1
                await proc.wait()
                await proc.reader  # type: ignore[attr-defined]
                tally.acked += len(reported) - before
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
                mount.cut()
        await server.terminate(timeout=15)
        stored = check_file(logs / "server.db")["ids"]
        tally.lost = len(reported - stored)
    finally:
        server.kill()
        mount.cut()
    return tally


async def run_target(target: Target, rounds: int, rng: random.Random, work: Path) -> Tally:
    if target.name == "client-spool":
        return await run_client_spool(rounds, rng, work)
    if target.name == "postgres":
        from tests.powerloss_pg import run_postgres

        return await run_postgres(rounds, rng, work)  # type: ignore[no-any-return]
    if target.name.startswith("jetstream-"):
        from tests.powerloss_js import run_jetstream

        sync = "always" if target.name == "jetstream-always" else None
        return await run_jetstream(rounds, rng, work, sync)  # type: ignore[no-any-return]
    tally = Tally()
    mount_dir, backing, logs = work / "mnt", work / "backing", work / "logs"
    for folder in (backing, logs):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    # The store is created off the mount first: its creation is not what is under test.
    first = server_on(backing / target.filename, target, logs)
    await first.start()
    await first.terminate(timeout=15)
    shutil.rmtree(backing / ".lossyfs", ignore_errors=True)
    expected: set[str] = set()
    seen: dict[int, bytes] = {}
    mount = Mount(mount_dir, backing, torn=rng.randrange(1 << 30) if target.torn else None)
    try:
        for round_no in range(rounds + 1):
            mount.start()
            path = mount_dir / target.filename
            server = server_on(path, target, logs)
            try:
                await server.start(timeout=30)
                try:
                    ids, twice = target.stored(path)
                except (AssertionError, msgspec.DecodeError, sqlite3.DatabaseError, KeyError):
                    tally.corrupt += 1
                    ids, twice = expected, 0
                tally.lost += len(expected - ids)
                tally.duplicated += twice
                expected &= ids
                if target.audit:
                    tally.forks += await forks_after(server.url, seen)
                    tally.checkpoints += len(seen)
                    seen = {}
                if round_no == rounds:
                    await server.terminate(timeout=15)
                    break
                acked: set[str] = set()
                statuses: dict[Any, int] = {}
                stop = asyncio.Event()
                workers = [
                    asyncio.create_task(
                        load(
                            server.url, f"{target.name}-r{round_no}w{w}", rng.randrange(1 << 30), stop, acked, statuses
                        )
                    )
                    for w in range(3)
                ]
                if target.audit:
                    workers.append(asyncio.create_task(watch_checkpoints(server.url, stop, seen)))
                await asyncio.sleep(rng.uniform(0.3, 1.5))  # the cut's random moment
                mount.cut()
                server.kill()
                stop.set()
                await asyncio.wait_for(asyncio.gather(*workers), timeout=60)
                tally.rounds += 1
                tally.acked += len(acked)
                expected |= acked
            finally:
                server.kill()
                mount.cut()
    finally:
        mount.cut()
    return tally


async def campaign(rounds: int, other_rounds: int, targets: list[str], seed: int) -> dict[str, dict[str, int]]:
    rng = random.Random(seed)
    results: dict[str, dict[str, int]] = {}
    with tempfile.TemporaryDirectory(prefix="powerloss-") as tmp:
        for name in targets:
            count = rounds if name in ("sqlite-full", "sqlite-full-torn", "sqlite-normal", "json") else other_rounds
            start = time.monotonic()
            tally = await run_target(TARGETS[name], count, rng, Path(tmp) / name)
            results[name] = asdict(tally)
            audit = TARGETS[name].audit
            if not audit:
                del results[name]["forks"], results[name]["checkpoints"]
            if not name.startswith("jetstream-"):
                del results[name]["stalls"]
            print(
                f"{name:16} {tally.rounds:6} {tally.acked:8} {tally.lost:6} {tally.duplicated:10} {tally.corrupt:7}"
                f" {tally.forks if audit else '':>5} {tally.checkpoints if audit else '':>11}"
                f"   ({time.monotonic() - start:.0f} s)",
                flush=True,
            )
    return results


def main(argv: list[str] | None = None, write: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100, help="rounds for sqlite-* and json")
    parser.add_argument("--other-rounds", type=int, default=20, help="rounds for the other targets")
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated targets")
    parser.add_argument("--seed", type=int, default=24)
    parser.add_argument("--output", type=Path, default=RESULTS, help="where the JSON goes ('-' for nowhere)")
    args = parser.parse_args(argv)
    print(
        f"{'target':16} {'rounds':>6} {'acked':>8} {'lost':>6} {'duplicated':>10} {'corrupt':>7}"
        f" {'forks':>5} {'checkpoints':>11}"
    )
    results = asyncio.run(campaign(args.rounds, args.other_rounds, args.targets.split(","), args.seed))
    if str(args.output) != "-":
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
