"""Scale-out bench (docs/scale-out.md): decisions committed per second with 1, 2 and 4 servers on one
PostgreSQL beside the database's own ceiling (COPY from one client), then JetStream end to end with 1 and 2
workers: accepted and committed per second, and the lag from a 202 to the record being readable.

    .venv/bin/python -m bench.scaleout [--seconds 6] [--connections 8] [--batch 20]
    .venv/bin/python -m bench.scaleout --sync [--pairs 3] [--workers 1]

`--sync` runs only JetStream end to end on an R3 cluster with NATS's default sync (a 2-minute timer) and with
`sync_interval: always` (every write fsynced before the acknowledgement), interleaved pairs on fresh clusters,
and writes bench/results/jetstream-sync.{json,md}.

Everything runs on this machine (loopback ports, a throwaway three-node NATS cluster, fresh schemas on the
PostgreSQL server of CAVRA_TEST_POSTGRES_URL); results go to bench/results/scaleout.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from cavra_ingest.auditlog.notes import load_signer
from cavra_ingest.broker.jetstream import server_syncs
from cavra_ingest.settings import Settings
from cavra_ingest.store.postgres.store import PostgresStore
from tests.natscluster import Cluster, Service

from .rows import row

HERE = Path(__file__).resolve().parent
LUA = HERE / "lua" / "decisions.lua"
RESULTS = HERE / "results"
POSTGRES_URL = os.environ.get("CAVRA_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
COLUMNS = (
    "decision_id session_id agent_id actor repository policy_pack action_type target rule_id decision severity"
    " timestamp correlation_id payload tenant_id workspace_id"
).split()


async def count(schema: str) -> int:
    conn = await asyncpg.connect(POSTGRES_URL, server_settings={"search_path": schema})
    try:
        return int(await conn.fetchval("SELECT count(*) FROM activity_decisions"))
    finally:
        await conn.close()


async def drop(schema: str) -> None:
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def wrk(url: str, connections: int, seconds: float, batch: int) -> subprocess.Popen[bytes]:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{round(seconds)}s", "--timeout", "10s", "-s", str(LUA),
           f"{url}/decisions", "--", "array", str(batch), "5000", "300", "random"]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def wrk_result(proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    out = (proc.communicate()[0] or b"").decode()
    line = next((x for x in out.splitlines() if x.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {out}")
    result: dict[str, Any] = json.loads(line[len("WRK_JSON ") :])
    return result


def cpu_seconds(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


async def servers_on_one_database(n: int, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """n `serve` processes on one fresh schema, each driven by its own wrk; committed rows per second."""
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    await PostgresStore(POSTGRES_URL, schema=schema).migrate()
    env = {"CAVRA_ACTIVITY_DB": POSTGRES_URL, "CAVRA_POSTGRES_SCHEMA": schema, "CAVRA_ACCESS_LOG": "0",
           "CAVRA_SIGNING_KEY": str(root / "signing-key")}  # fmt: skip
    services = [Service("serve", env, root / f"pg-{n}-{i}.log") for i in range(n)]
    try:
        for service in services:
            await service.start()
        pids = [s.proc.pid for s in services if s.proc is not None]
        cpu_before, started = cpu_seconds(pids), time.monotonic()
        loads = [wrk(s.url, max(1, args.connections // n), args.seconds, args.batch) for s in services]
        results = [wrk_result(p) for p in loads]
        wall = time.monotonic() - started
        cpu = cpu_seconds(pids) - cpu_before
        committed = await count(schema)
        return {
            "load_average_1m": round(os.getloadavg()[0], 1),
            "servers": n,
            "committed": committed,
            "decisions_per_s": round(committed / args.seconds),
            "server_cpu_cores": round(cpu / wall, 2),
            "p99_ms": max(r["p99_us"] for r in results) / 1000,
        }
    finally:
        for service in services:
            service.stop()
        await drop(schema)


async def copy_ceiling(args: argparse.Namespace) -> dict[str, Any]:
    """The same rows by COPY from one client, in the servers' batch size per transaction (no summaries)."""
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    await PostgresStore(POSTGRES_URL, schema=schema).migrate()
    rng = random.Random(1)
    rows = [row(rng, 5000, 300) for _ in range(60_000)]
    conn = await asyncpg.connect(POSTGRES_URL, server_settings={"search_path": schema})
    try:
        started = time.monotonic()
        step = 500
        for start in range(0, len(rows), step):
            async with conn.transaction():
                await conn.copy_records_to_table("activity_decisions", records=rows[start : start + step],
                                                 columns=COLUMNS)  # fmt: skip
        seconds = time.monotonic() - started
    finally:
        await conn.close()
        await drop(schema)
    return {"rows": len(rows), "decisions_per_s": round(len(rows) / seconds), "rows_per_transaction": step}


async def lag_probe(url: str, stop: asyncio.Event, lags: list[float]) -> None:
    """Every 0.2 s: post one decision, then poll until it is readable; record the seconds from the 202."""
    async with aiohttp.ClientSession() as http:
        while not stop.is_set():
            body = {"decision": "allow", "session_id": "lag-probe", "decision_id": f"lag-{uuid.uuid4().hex}"}
            async with http.post(f"{url}/decisions", json=body) as response:
                if response.status != 202:
                    await asyncio.sleep(0.2)
                    continue
            acked = time.monotonic()
            while True:
                async with http.get(f"{url}/decisions/{body['decision_id']}") as response:
                    if response.status == 200:
                        lags.append(time.monotonic() - acked)
                        break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)


async def jetstream(workers: int, args: argparse.Namespace, root: Path, cluster: Cluster) -> dict[str, Any]:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    await PostgresStore(POSTGRES_URL, schema=schema).migrate()
    env = {"CAVRA_ACTIVITY_DB": POSTGRES_URL, "CAVRA_POSTGRES_SCHEMA": schema, "CAVRA_ACCESS_LOG": "0",
           "CAVRA_SIGNING_KEY": str(root / "signing-key"), "CAVRA_BROKER_URL": cluster.url,
           "CAVRA_STREAM_REPLICAS": "3"}  # fmt: skip
    replica = Service("serve", env, root / f"js-{workers}-replica.log")
    consumers = [Service("worker", env, root / f"js-{workers}-worker-{i}.log") for i in range(workers)]
    try:
        await replica.start()
        for worker in consumers:
            await worker.start()
        stop, lags = asyncio.Event(), []
        probe = asyncio.ensure_future(lag_probe(replica.url, stop, lags))
        started = time.monotonic()
        try:
            result = await asyncio.to_thread(wrk_result, wrk(replica.url, args.connections, args.seconds, args.batch))
        except RuntimeError as exc:
            exited = replica.proc.poll() if replica.proc is not None else None
            raise RuntimeError(f"{exc}; replica exit status {exited}, its log: {replica.log()[-2000:]}") from exc
        stop.set()
        await probe
        accepted = result["requests"] * args.batch
        while await count(schema) < accepted + len(lags):
            if time.monotonic() - started > args.seconds + 120:
                break
            await asyncio.sleep(0.1)
        drained = time.monotonic() - started
        committed = await count(schema)
        lags.sort()
        return {
            "load_average_1m": round(os.getloadavg()[0], 1),
            "workers": workers,
            "accepted_per_s": round(accepted / args.seconds),
            "committed": committed,
            "end_to_end_per_s": round(committed / drained),
            "drained_after_s": round(drained, 1),
            "lag_p50_ms": round(statistics.median(lags) * 1000) if lags else None,
            "lag_p95_ms": round(lags[int(len(lags) * 0.95)] * 1000) if lags else None,
            "lag_samples": len(lags),
        }
    finally:
        for service in [replica, *consumers]:
            service.stop()
        await drop(schema)


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# Scale-out bench ({report['cores']} cores, {report['seconds']} s per run, batches of "
             f"{report['batch']}, {report['connections']} connections)", "",
             "| PostgreSQL writers | decisions/s committed | server CPU (cores) | p99 ms | machine load (1 min) |",
             "|---|---|---|---|---|"]  # fmt: skip
    for run in report["servers"]:
        lines.append(f"| {run['servers']} server(s) | {run['decisions_per_s']} | {run['server_cpu_cores']} | "
                     f"{run['p99_ms']:.0f} | {run['load_average_1m']} |")  # fmt: skip
    ceiling = report["copy_ceiling"]
    lines.append(f"| COPY from one client, {ceiling['rows_per_transaction']} rows/transaction, no summaries | "
                 f"{ceiling['decisions_per_s']} | | | |")  # fmt: skip
    one, two = report["servers"][0]["decisions_per_s"], report["servers"][1]["decisions_per_s"]
    lines += ["", f"2 servers / 1 server: {two / max(1, one):.2f}x", "", f"Command: `{report['command']}`", ""]
    lines += ["| JetStream (R3) | accepted/s (202) | end-to-end committed/s | drained after s | lag p50 ms |"
              " lag p95 ms | machine load (1 min) |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for run in report["jetstream"]:
        lines.append(f"| {run['workers']} worker(s) | {run['accepted_per_s']} | {run['end_to_end_per_s']} | "
                     f"{run['drained_after_s']} | {run['lag_p50_ms']} | {run['lag_p95_ms']} |"
                     f" {run['load_average_1m']} |")  # fmt: skip
    return "\n".join(lines) + "\n"


async def sync_run(mode: str, index: int, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """One JetStream run on a fresh R3 cluster whose nodes sync on NATS's timer (`default`) or every write."""
    cluster = Cluster(root / f"nats-{index}-{mode}", sync_interval="always" if mode == "always" else None)
    cluster.root.mkdir()
    await cluster.start()
    try:
        # What the servers say they do, not what the config file was meant to say.
        syncs = [await server_syncs(f"http://127.0.0.1:{node.monitor_port}", 5) for node in cluster.nodes]
        assert syncs == [mode == "always"] * 3, (mode, syncs)
        result = await jetstream(args.workers, args, root, cluster)
    finally:
        cluster.stop()
    return {"sync": mode, "pair": index, **result}


async def sync_comparison(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """`--pairs` pairs, the order alternating (default first, then always first) so drift in the machine's
    load falls on both sides; the ratio is of the medians."""
    runs = []
    for index in range(args.pairs):
        for mode in ("default", "always") if index % 2 == 0 else ("always", "default"):
            runs.append(await sync_run(mode, index, args, root))
            print(json.dumps(runs[-1]), flush=True)
    summary: dict[str, Any] = {}
    for key in ("accepted_per_s", "end_to_end_per_s"):
        median = {m: statistics.median(r[key] for r in runs if r["sync"] == m) for m in ("default", "always")}
        summary[key] = {**median, "ratio": round(median["always"] / max(1, median["default"]), 2)}
    return {"runs": runs, "summary": summary}


def sync_markdown(report: dict[str, Any]) -> str:
    lines = [f"# JetStream: sync on every write ({report['cores']} cores, {report['seconds']} s per run, batches of "
             f"{report['batch']}, {report['connections']} connections, {report['workers']} worker(s), R3, stores on "
             f"{report['filesystem']})", "",
             "| pair | NATS sync | accepted/s (202) | end-to-end committed/s | drained after s | lag p50 ms |"
             " lag p95 ms | machine load (1 min) |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for run in report["runs"]:
        lines.append(f"| {run['pair']} | {run['sync']} | {run['accepted_per_s']} | {run['end_to_end_per_s']} | "
                     f"{run['drained_after_s']} | {run['lag_p50_ms']} | {run['lag_p95_ms']} |"
                     f" {run['load_average_1m']} |")  # fmt: skip
    lines.append("")
    for key, name in (("accepted_per_s", "202s/s"), ("end_to_end_per_s", "committed/s")):
        s = report["summary"][key]
        lines.append(f"- {name}, median: default {s['default']:.0f}, always {s['always']:.0f}: **{s['ratio']:.2f}x**")
    lines += ["", f"Command: `{report['command']}`", ""]
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--sync", action="store_true", help="only JetStream, default sync against always")
    parser.add_argument("--pairs", type=int, default=3, help="--sync: interleaved pairs of runs")
    parser.add_argument("--workers", type=int, default=1, help="--sync: workers per run")
    args = parser.parse_args()
    command = " ".join([".venv/bin/python -m bench.scaleout", *sys.argv[1:]])
    # On the disk (the folder TMPDIR names), never a tmpfs: fsync must cost what it costs.
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        load_signer(root / "signing-key", Settings().audit.audit_log_origin, create=True)
        if args.sync:
            fs = subprocess.run(["stat", "-f", "-c", "%T", tmp], capture_output=True, text=True).stdout.strip()
            assert fs != "tmpfs", "the NATS stores must be on a disk: set TMPDIR to a folder on one"
            report = {"command": command, "cores": os.cpu_count(), "seconds": args.seconds, "batch": args.batch,
                      "connections": args.connections, "workers": args.workers, "filesystem": fs,
                      **await sync_comparison(args, root)}  # fmt: skip
            RESULTS.mkdir(exist_ok=True)
            (RESULTS / "jetstream-sync.json").write_text(json.dumps(report, indent=2) + "\n")
            (RESULTS / "jetstream-sync.md").write_text(sync_markdown(report))
            print(sync_markdown(report))
            return
        report: dict[str, Any] = {"command": command, "cores": os.cpu_count(), "seconds": args.seconds,
                                  "batch": args.batch, "connections": args.connections}  # fmt: skip
        report["servers"] = [await servers_on_one_database(n, args, root) for n in (1, 2, 4)]
        report["copy_ceiling"] = await copy_ceiling(args)
        cluster = Cluster(root / "nats")
        cluster.root.mkdir()
        await cluster.start()
        try:
            report["jetstream"] = [await jetstream(n, args, root, cluster) for n in (1, 2)]
        finally:
            cluster.stop()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scaleout.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "scaleout.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    asyncio.run(main())
