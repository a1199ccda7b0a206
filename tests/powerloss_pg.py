"""The `postgres` power-loss target: a private PostgreSQL server whose data folder is on the lossy filesystem.

The machine's PostgreSQL binaries (`initdb`, `postgres`) run a throwaway cluster on its own port on 127.0.0.1
with the settings a deployment keeps (`fsync=on`, `synchronous_commit=on`, `full_page_writes=on`). PostgreSQL
refuses to run as root, so under root it runs as the `postgres` OS user and the mount lets that user in
(`allow_other`, entries reported as its own). A cut kills the FUSE process and then every PostgreSQL process;
the restart must recover from the WAL that survived.
"""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import asyncpg

from cavra_ingest.auditlog.notes import load_signer
from cavra_ingest.settings import Settings
from cavra_ingest.store.postgres.store import PostgresStore
from tests.lossyfs import Mount
from tests.natscluster import Service
from tests.pgcheck import check_schema
from tests.procs import free_port
from tests.web.test_faults import load

SCHEMA = "cavra"
# Real durability settings; the rest keeps a small cluster small (1 MB WAL segments, no background noise).
SETTINGS = {
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "listen_addresses": "127.0.0.1",
    "max_connections": "40",
    "shared_buffers": "16MB",
    "logging_collector": "off",
}


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's bin folder (Debian's layout), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def postgres_missing() -> str | None:
    if postgres_bin() is None:
        return "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin"
    if os.getuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and no `postgres` user to run PostgreSQL as"
    return None


class PrivatePostgres:
    """One PostgreSQL server on `data` (the mount), run as the postgres user when this process is root."""

    def __init__(self, data: Path, sockets: Path, log: Path) -> None:
        self.bin = postgres_bin()
        assert self.bin is not None
        self.data, self.sockets, self.log_path = data, sockets, log
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.user: str | None = None
        self.owner: tuple[int, int] | None = None
        if os.getuid() == 0:
            entry = pwd.getpwnam("postgres")
            self.user, self.owner = "postgres", (entry.pw_uid, entry.pw_gid)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def give(self, path: Path) -> None:
        """Make `path` the server user's (PostgreSQL wants its folders 0700 and its own)."""
        path.mkdir(parents=True, exist_ok=True)
        if self.owner is not None:
            for folder, _, files in os.walk(path):
                os.chown(folder, *self.owner)
                for name in files:
                    os.chown(os.path.join(folder, name), *self.owner)

    def initdb(self, folder: Path) -> None:
        self.give(folder)
        folder.chmod(0o700)
        self.give(self.sockets)
        command = [str(self.bin / "initdb"), "-D", str(folder), "-A", "trust", "-U", "postgres", "--wal-segsize=1"]
        done = subprocess.run(command, capture_output=True, text=True, user=self.user, cwd="/")
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr[-2000:]}")

    async def start(self, folder: Path | None = None, timeout: float = 60.0) -> None:
        command = [str(self.bin / "postgres"), "-D", str(folder or self.data), "-p", str(self.port)]
        command += ["-k", str(self.sockets)]
        for name, value in SETTINGS.items():
            command += ["-c", f"{name}={value}"]
        with open(self.log_path, "ab") as log:
            # Its own process group: the cut kills the postmaster and every backend at once.
            self.proc = subprocess.Popen(
                command, stdout=log, stderr=log, user=self.user, start_new_session=True, cwd="/"
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited {self.proc.returncode}: {self.log()[-2000:]}")
            try:
                conn = await asyncpg.connect(self.url, timeout=2)
                await conn.close()
                return
            except (OSError, asyncpg.PostgresError, TimeoutError):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"postgres did not come up: {self.log()[-2000:]}") from None
                await asyncio.sleep(0.1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL to the whole process group: no shutdown checkpoint, no goodbye."""
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
            self.proc = None

    def stop(self, timeout: float = 30.0) -> None:
        """A fast shutdown (SIGINT): it checkpoints and syncs, as an operator's stop would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()


async def stored(url: str, schema: str = SCHEMA) -> tuple[set[str], int]:
    """The ids PostgreSQL kept and how many are stored twice; AssertionError when summaries disagree with a
    recount or the audit log lost one: every decision has one leaf or still waits for the sequencer, once."""
    ids = (await check_schema(url, schema))["ids"]
    conn = await asyncpg.connect(url, server_settings={"search_path": schema})
    try:
        # One snapshot: a sequencer still running moves decisions from the queue to the leaves between two
        # separate statements, and they would be counted in neither.
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            decided = [row[0] for row in await conn.fetch("SELECT decision_id FROM activity_decisions")]
            leaves = await conn.fetch("SELECT leaf_index, decision_id FROM audit_leaves ORDER BY leaf_index")
            queued = [row[0] for row in await conn.fetch("SELECT decision_id FROM audit_pending")]
    finally:
        await conn.close()
    assert [row[0] for row in leaves] == list(range(len(leaves))), "leaf indexes have a gap"
    logged = [row[1] for row in leaves] + queued
    assert sorted(logged) == sorted(decided), f"{len(logged)} leaves and queued for {len(decided)} decisions"
    return ids, len(decided) - len(ids)


async def run_postgres(rounds: int, rng: random.Random, work: Path) -> Any:
    from tests.powerloss import Tally

    tally = Tally()
    mount_dir, backing, logs, template = work / "mnt", work / "backing", work / "logs", work / "template"
    for folder in (backing, logs, template):
        shutil.rmtree(folder, ignore_errors=True)
    logs.mkdir(parents=True)
    for folder in (work.parent, work):  # the postgres user walks through them to its mount and sockets
        folder.chmod(folder.stat().st_mode | 0o755)
    pg = PrivatePostgres(mount_dir, logs / "sockets", logs / "postgres.log")
    # The cluster and its schema are made off the mount: their creation is not what is under test.
    pg.initdb(template)
    await pg.start(template)
    await PostgresStore(pg.url, schema=SCHEMA).migrate()
    pg.stop()
    shutil.copytree(template, backing, symlinks=True)
    pg.give(backing)
    backing.chmod(0o700)
    pg.give(mount_dir)
    key = logs / "signing-key"
    load_signer(key, Settings().audit.audit_log_origin, create=True)
    env = {
        "CAVRA_ACTIVITY_DB": pg.url,
        "CAVRA_POSTGRES_SCHEMA": SCHEMA,
        "CAVRA_SIGNING_KEY": str(key),
        "CAVRA_UVLOOP": "0",
    }
    expected: set[str] = set()
    mount = Mount(mount_dir, backing, owner=pg.owner)
    try:
        for round_no in range(rounds + 1):
            mount.start()
            try:
                await pg.start()  # recovery from the WAL that survived
            except (RuntimeError, TimeoutError) as error:
                print(f"  postgres did not recover: {error}", flush=True)
                tally.corrupt += 1
                tally.lost += len(expected)
                break
            try:
                ids, twice = await stored(pg.url)
            except (AssertionError, asyncpg.PostgresError) as error:
                print(f"  corrupt after the cut: {error!r}", flush=True)
                tally.corrupt += 1
                ids, twice = expected, 0
            tally.lost += len(expected - ids)
            tally.duplicated += twice
            expected &= ids
            if round_no == rounds:
                pg.stop()
                break
            server = Service("serve", env, logs / "serve.log")
            try:
                await server.start()
                acked: set[str] = set()
                statuses: dict[Any, int] = {}
                stop = asyncio.Event()
                workers = [
                    asyncio.create_task(
                        load(server.url, f"postgres-r{round_no}w{w}", rng.randrange(1 << 30), stop, acked, statuses)
                    )
                    for w in range(3)
                ]
                await asyncio.sleep(rng.uniform(0.3, 1.5))  # the cut's random moment
                mount.cut()  # the disk's volatile cache goes first, then every process on the host
                pg.kill()
                server.kill()
                stop.set()
                await asyncio.wait_for(asyncio.gather(*workers), timeout=60)
                tally.rounds += 1
                tally.acked += len(acked)
                expected |= acked
            finally:
                server.kill()
                pg.kill()
                mount.cut()
    finally:
        pg.kill()
        mount.cut()
    return tally
