"""`make bench`: the ingest pipeline under wrk, beside its HTTP and SQLite ceilings, measured in one run."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cavra_ingest.store.migrate import apply_migrations

from .ceiling import COMPOSITE_INDEX
from .preload import build_counts, build_search_index, preload

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"
RESULTS = HERE / "results"
LUA = HERE / "lua" / "decisions.lua"
SERVER_CORE, LOAD_CORE = "0", "1"
# CAVRA_BENCH_PORT: another port, so that two benchmarks on one machine do not meet.
PORT = int(os.environ.get("CAVRA_BENCH_PORT", "8097"))
TICK = os.sysconf("SC_CLK_TCK")
SESSIONS, AGENTS = 5000, 300


def cpu_seconds(pid: int) -> float:
    """Return user+system CPU seconds of a process, all its threads included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def free_port_ready(port: int, proc: subprocess.Popen[bytes] | None = None, deadline_s: float = 120.0) -> None:
    """Wait until something accepts connections on the port; fail early if the process exits."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on port {port} after {deadline_s}s")


class Server:
    """A server process pinned to the server core; stopped with SIGTERM."""

    def __init__(
        self, args: list[str], env: dict[str, str] | None = None, port: int = PORT, log_path: Path | None = None
    ) -> None:
        self.port = port
        full_env = {**os.environ, **(env or {})}
        self.log = open(log_path or WORK / f"server-{port}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            ["taskset", "-c", SERVER_CORE, sys.executable, *args], env=full_env, stdout=self.log, stderr=self.log
        )
        try:
            free_port_ready(port, self.proc)
        except RuntimeError:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def peak_rss_mb(self) -> float:
        """Peak resident set of the server (VmHWM of taskset's exec'd process)."""
        return round(status_kb(self.pid, "VmHWM") / 1024, 1)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def pipeline(db: Path, env: dict[str, str] | None = None) -> Server:
    """Start `python -m cavra_ingest serve` on the given SQLite file."""
    return Server(
        ["-m", "cavra_ingest", "serve", "--port", str(PORT)],
        {"CAVRA_ACTIVITY_DB": str(db), **(env or {})},
    )


def healthz(port: int = PORT) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as reply:
        result: dict[str, Any] = json.loads(reply.read())
        return result


def drained(port: int = PORT, deadline_s: float = 60.0) -> dict[str, Any]:
    """Poll /healthz until the writer's queue is empty; return the last reply."""
    end = time.monotonic() + deadline_s
    while True:
        health = healthz(port)
        if health["queued_records"] == 0 or time.monotonic() > end:
            return health
        time.sleep(0.05)


def count_rows(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        return int(con.execute("SELECT count(*) FROM activity_decisions").fetchone()[0])


def wrk(port: int, mode: str, per_request: int, connections: int, duration_s: float, ids: str) -> dict[str, Any]:
    """Run wrk pinned to the load core; return its summary and its own CPU use."""
    cmd = ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{connections}", f"-d{round(duration_s)}s", "--timeout", "10s"]
    cmd += ["-s", str(LUA), f"http://127.0.0.1:{port}/decisions", "--"]
    cmd += [mode, str(per_request), str(SESSIONS), str(AGENTS), ids]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    out = proc.stdout.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - start
    line = next((x for x in out.splitlines() if x.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {out}")
    result: dict[str, Any] = json.loads(line[len("WRK_JSON ") :])
    result["load_cpu_share"] = (usage.ru_utime + usage.ru_stime) / wall
    return result


class RssSampler(threading.Thread):
    """Sample a process's resident set every half second while a run lasts."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[int] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.5):
            self.samples.append(status_kb(self.pid, "VmRSS"))


def load(
    server: Server,
    db: Path | None,
    mode: str,
    per_request: int,
    connections: int,
    duration_s: float,
    ids: str = "random",
) -> dict[str, Any]:
    """Drive one server with wrk and measure it from the outside (database, /proc, /healthz)."""
    before_rows = count_rows(db) if db else 0
    before_stats = healthz()["writer"] if db else {}
    before_cpu = cpu_seconds(server.pid)
    sampler = RssSampler(server.pid)
    sampler.start()
    result = wrk(server.port, mode, per_request, connections, duration_s, ids)
    sampler.stopped.set()
    cpu_used = cpu_seconds(server.pid) - before_cpu
    result["server_cpu_share"] = cpu_used / duration_s
    result["peak_rss_mb"] = status_kb(server.pid, "VmHWM") / 1024
    result["rss_first_mb"] = sampler.samples[0] / 1024 if sampler.samples else None
    result["rss_last_mb"] = sampler.samples[-1] / 1024 if sampler.samples else None
    result["rss_samples_mb"] = [round(kb / 1024) for kb in sampler.samples]
    result["requests_per_s"] = result["requests"] / (result["duration_us"] / 1e6)
    if db is None:
        result["decisions_per_s"] = result["requests_per_s"] * per_request
        result["cpu_us_per_decision"] = cpu_used * 1e6 / max(1, result["requests"] * per_request)
        return result
    after_stats = drained()["writer"]
    committed = count_rows(db) - before_rows
    transactions = after_stats["transactions"] - before_stats["transactions"]
    result["committed"] = committed
    # Less noisy than throughput on a shared machine: what each committed decision cost the server's core.
    result["cpu_us_per_decision"] = cpu_used * 1e6 / max(1, committed)
    result["decisions_per_s"] = committed / (result["duration_us"] / 1e6)
    result["transactions"] = transactions
    result["mean_batch"] = (after_stats["records"] - before_stats["records"]) / transactions if transactions else 0
    return result


def remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def fresh_db(name: str, composite_index: bool = False) -> Path:
    path = WORK / f"{name}.db"
    remove_db(path)
    apply_migrations(path)
    if composite_index:
        with sqlite3.connect(path) as con:
            con.execute(COMPOSITE_INDEX)
    return path


def ceiling(
    batch: int, duration_s: float, composite_index: bool = False, synchronous: str = "FULL", without_006: bool = False
) -> float:
    """Plain sqlite3 rows/s at one transaction size, in its own process on the server core."""
    db = fresh_db(f"ceiling-{batch}", composite_index)
    cmd = ["taskset", "-c", SERVER_CORE, sys.executable, "-m", "bench.ceiling", str(db)]
    cmd += ["--batch", str(batch), "--duration", str(duration_s), "--synchronous", synchronous]
    if composite_index:
        cmd.append("--composite-index")
    if without_006:
        cmd.append("--without-006")
    try:
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=HERE.parent).stdout
    finally:
        remove_db(db)
    return float(json.loads(out)["rows_per_s"])


@dataclass
class Plan:
    duration_s: float
    ceiling_s: float
    repeats: int
    rows: int
    sweep: list[int]
    ids: str
    compare_normal: bool
    server_env: dict[str, str] = field(default_factory=dict)


WORKLOADS = {
    # name: (wrk mode, decisions per request, connections)
    "w1_single": ("single", 1, 64),
    "w2_array100": ("array", 100, 16),
    "w3_ndjson1000": ("ndjson", 1000, 8),
}


def uvloop_flag(plan: Plan) -> list[str]:
    """Give the no-op ceiling the same event loop the pipeline's `serve` will pick."""
    if plan.server_env.get("CAVRA_UVLOOP", os.environ.get("CAVRA_UVLOOP", "1")).lower() in {"0", "false", "no", "off"}:
        return []
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return []
    return ["--uvloop"]


def noop_run(plan: Plan) -> dict[str, Any]:
    noop = Server(["-m", "bench.noop_server", "--port", str(PORT), *uvloop_flag(plan)])
    try:
        return load(noop, None, "single", 1, 64, plan.duration_s, plan.ids)
    finally:
        noop.stop()


def one_round(plan: Plan, pipeline_only: bool = False) -> dict[str, Any]:
    """One pass over every workload and ceiling, so that their ratios share the machine's state."""
    out: dict[str, Any] = {"noop_before": noop_run(plan)}
    for name, (mode, per_request, connections) in WORKLOADS.items():
        db = fresh_db(name)
        server = pipeline(db, plan.server_env)
        try:
            out[name] = load(server, db, mode, per_request, connections, plan.duration_s, plan.ids)
        finally:
            server.stop()
    # The ceiling is run before and after the pipeline (A-B-A): drift in the machine's load cancels out.
    out["noop_after"] = noop_run(plan)
    out["noop"] = {
        key: (value + out["noop_after"][key]) / 2 if isinstance(value, int | float) else value
        for key, value in out["noop_before"].items()
    }
    if pipeline_only:
        return out
    # The same app committing with plain sqlite3 (bench/plain_sink_server.py): the floor a store shares the
    # server's core with, for the two workloads whose goals compare against plain sqlite3 and the null sink.
    for name in ("w1_single", "w2_array100"):
        mode, per_request, connections = WORKLOADS[name]
        db = fresh_db(f"{name}_plain_app")
        server = Server(["-m", "bench.plain_sink_server", "--port", str(PORT)], {"CAVRA_ACTIVITY_DB": str(db)})
        try:
            out[f"{name}_plain_app"] = load(server, db, mode, per_request, connections, plan.duration_s, plan.ids)
        finally:
            server.stop()
    db = fresh_db("w1_composite", composite_index=True)
    server = pipeline(db, plan.server_env)
    try:
        out["w1_composite"] = load(server, db, "single", 1, 64, plan.duration_s, plan.ids)
    finally:
        server.stop()
    if plan.compare_normal:
        # What FULL durability costs: the same workloads with synchronous=NORMAL.
        for name in ("w1_single", "w3_ndjson1000"):
            mode, per_request, connections = WORKLOADS[name]
            db = fresh_db(f"{name}_normal")
            server = pipeline(db, {**plan.server_env, "CAVRA_SQLITE_SYNCHRONOUS": "NORMAL"})
            try:
                out[f"{name}_normal"] = load(server, db, mode, per_request, connections, plan.duration_s, plan.ids)
            finally:
                server.stop()
    sync = plan.server_env.get("CAVRA_SQLITE_SYNCHRONOUS", "FULL")
    out["ceiling"] = {
        "100": ceiling(100, plan.ceiling_s, synchronous=sync),
        "1000": ceiling(1000, plan.ceiling_s, synchronous=sync),
        "100_composite": ceiling(100, plan.ceiling_s, True, synchronous=sync),
        "1000_composite": ceiling(1000, plan.ceiling_s, True, synchronous=sync),
        # What the read API's 006 indexes cost every insert: the same ceiling on the 004+005 layout.
        "100_without_006": ceiling(100, plan.ceiling_s, synchronous=sync, without_006=True),
        "1000_without_006": ceiling(1000, plan.ceiling_s, synchronous=sync, without_006=True),
    }
    for name in WORKLOADS:
        size = max(1, round(out[name]["mean_batch"]))
        out["ceiling"][f"observed_{name}"] = {
            "batch": size,
            "rows_per_s": ceiling(size, plan.ceiling_s, synchronous=sync),
        }
    return out


def preloaded_db(rows: int, ids: str) -> Path:
    """Build (once, then reuse) a database already holding `rows` decisions."""
    path = WORK / f"preloaded-{rows}-{ids}.db"
    if path.exists():
        # A file pre-loaded before a newer migration gets it here, not inside the server's start-up deadline.
        apply_migrations(path)
        build_counts(path)
    else:
        print(f"pre-loading {rows:,} rows into {path} ...", flush=True)
        partial = Path(f"{path}.partial")
        partial.unlink(missing_ok=True)
        preload(partial, rows, ids=ids)
        partial.rename(path)
    build_search_index(path)
    return path


def median_of(runs: list[dict[str, Any]], key: str) -> float:
    values = [run[key] for run in runs if run.get(key) is not None]
    return statistics.median(values) if values else float("nan")


def summarise(rounds: list[dict[str, Any]], w4: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians per workload and the ratios the issue asks for, each ratio taken within one round."""
    keys = ["decisions_per_s", "p50_us", "p99_us", "p999_us", "server_cpu_share", "peak_rss_mb"]
    keys += ["mean_batch", "load_cpu_share", "status_errors", "requests_per_s", "cpu_us_per_decision"]
    table: dict[str, Any] = {}
    for name in [
        "noop",
        *WORKLOADS,
        "w1_single_plain_app",
        "w2_array100_plain_app",
        "w1_composite",
        "w1_single_normal",
        "w3_ndjson1000_normal",
    ]:
        if name in rounds[0]:
            table[name] = {key: median_of([r[name] for r in rounds], key) for key in keys}
    if w4:
        table["w4_single_preloaded"] = {key: median_of(w4, key) for key in keys}
    ratios = {
        "w1_vs_noop": statistics.median(
            r["w1_single"]["decisions_per_s"] / r["noop"]["decisions_per_s"] for r in rounds
        ),
        "w2_vs_sqlite_batch100": statistics.median(
            r["w2_array100"]["decisions_per_s"] / r["ceiling"]["100"] for r in rounds
        ),
        "w3_vs_sqlite_batch1000": statistics.median(
            r["w3_ndjson1000"]["decisions_per_s"] / r["ceiling"]["1000"] for r in rounds
        ),
        "w2_vs_sqlite_observed_batch": statistics.median(
            r["w2_array100"]["decisions_per_s"] / r["ceiling"]["observed_w2_array100"]["rows_per_s"] for r in rounds
        ),
        "w3_vs_sqlite_observed_batch": statistics.median(
            r["w3_ndjson1000"]["decisions_per_s"] / r["ceiling"]["observed_w3_ndjson1000"]["rows_per_s"] for r in rounds
        ),
        "w1_vs_sqlite_observed_batch": statistics.median(
            r["w1_single"]["decisions_per_s"] / r["ceiling"]["observed_w1_single"]["rows_per_s"] for r in rounds
        ),
        "w1_composite_vs_w1": statistics.median(
            r["w1_composite"]["decisions_per_s"] / r["w1_single"]["decisions_per_s"] for r in rounds
        ),
        "sqlite100_composite_vs_plain": statistics.median(
            r["ceiling"]["100_composite"] / r["ceiling"]["100"] for r in rounds
        ),
        "sqlite1000_composite_vs_plain": statistics.median(
            r["ceiling"]["1000_composite"] / r["ceiling"]["1000"] for r in rounds
        ),
        "sqlite100_with_006_vs_without": statistics.median(
            r["ceiling"]["100"] / r["ceiling"]["100_without_006"] for r in rounds
        ),
        "sqlite1000_with_006_vs_without": statistics.median(
            r["ceiling"]["1000"] / r["ceiling"]["1000_without_006"] for r in rounds
        ),
    }
    if "w2_array100_plain_app" in rounds[0]:
        for name in ("w1_single", "w2_array100"):
            ratios[f"{name}_vs_plain_app"] = statistics.median(
                r[name]["decisions_per_s"] / r[f"{name}_plain_app"]["decisions_per_s"] for r in rounds
            )
        ratios["w2_plain_app_vs_sqlite_observed_batch"] = statistics.median(
            r["w2_array100_plain_app"]["decisions_per_s"] / r["ceiling"]["observed_w2_array100"]["rows_per_s"]
            for r in rounds
        )
    if "w1_single_normal" in rounds[0]:
        for name in ("w1_single", "w3_ndjson1000"):
            ratios[f"{name}_normal_vs_full"] = statistics.median(
                r[f"{name}_normal"]["decisions_per_s"] / r[name]["decisions_per_s"] for r in rounds
            )
    if w4:
        ratios["w4_vs_w1_same_period"] = median_of(w4, "vs_empty")
    ceilings = {
        key: statistics.median(
            r["ceiling"][key]["rows_per_s"] if isinstance(r["ceiling"][key], dict) else r["ceiling"][key]
            for r in rounds
        )
        for key in rounds[0]["ceiling"]
    }
    return {"workloads": table, "ratios": ratios, "ceilings": ceilings}


def sweep(plan: Plan) -> list[dict[str, Any]]:
    """Throughput and latency of workload 1 against the number of connections (offered load)."""
    points = []
    db = fresh_db("sweep")
    server = pipeline(db, plan.server_env)
    try:
        for connections in plan.sweep:
            result = load(server, db, "single", 1, connections, plan.duration_s, plan.ids)
            result["connections"] = connections
            points.append(result)
            print(
                f"  sweep c={connections}: {result['decisions_per_s']:.0f}/s p99 {result['p99_us'] / 1000:.1f} ms",
                flush=True,
            )
    finally:
        server.stop()
    return points


def overload(plan: Plan) -> dict[str, Any]:
    """NDJSON bodies of 1,000 from 128 connections: more in flight (128k) than the queue holds (50k)."""
    db = fresh_db("overload")
    server = pipeline(db, plan.server_env)
    try:
        # Three points long, so the resident set can be seen to level off.
        return load(server, db, "ndjson", 1000, 128, 3 * plan.duration_s, plan.ids)
    finally:
        server.stop()
        remove_db(db)


def markdown(report: dict[str, Any]) -> str:
    s = report["summary"]
    lines = [
        f"# cavra-ingest bench, {report['started']}",
        "",
        f"`{report['command']}`; {report['plan']['repeats']} rounds of {report['plan']['duration_s']} s per point,"
        f" medians; server pinned to core {SERVER_CORE}, wrk to core {LOAD_CORE}; ids {report['plan']['ids']};"
        f" server env {report['plan']['server_env'] or 'defaults'}.",
        "",
        "| workload | decisions/s | p50 ms | p99 ms | p99.9 ms | server CPU | peak RSS MB | mean batch "
        "| wrk CPU | non-2xx | CPU µs/decision |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, w in s["workloads"].items():
        lines.append(
            f"| {name} | {w['decisions_per_s']:,.0f} | {w['p50_us'] / 1000:.1f} | {w['p99_us'] / 1000:.1f} "
            f"| {w['p999_us'] / 1000:.1f} | {w['server_cpu_share']:.0%} | {w['peak_rss_mb']:.0f} "
            f"| {w['mean_batch']:.0f} | {w['load_cpu_share']:.0%} | {w['status_errors']:.0f} "
            f"| {w['cpu_us_per_decision']:.0f} |"
        )
    lines += ["", "| ratio (same round, median) | value |", "|---|---|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in s["ratios"].items()]
    lines += ["", "| plain sqlite3 ceiling | rows/s |", "|---|---|"]
    lines += [f"| {k} | {v:,.0f} |" for k, v in s["ceilings"].items()]
    if report.get("overload"):
        o = report["overload"]
        lines += [
            "",
            f"Overload (NDJSON 1,000 x 128 connections): {o['decisions_per_s']:,.0f} decisions/s committed, "
            f"{o['status_errors']} non-2xx replies (503 queue full), RSS first/last/peak "
            f"{o['rss_first_mb']:.0f}/{o['rss_last_mb']:.0f}/{o['peak_rss_mb']:.0f} MB; "
            f"RSS every 0.5 s: {o['rss_samples_mb']}.",
        ]
    if report.get("sweep"):
        top = max(p["decisions_per_s"] for p in report["sweep"])
        half = min(report["sweep"], key=lambda p: abs(p["decisions_per_s"] - top / 2))
        lines += [
            "",
            f"Sweep: maximum {top:,.0f} decisions/s; nearest point to half of it: {half['connections']} connections, "
            f"{half['decisions_per_s']:,.0f}/s, p99 {half['p99_us'] / 1000:.1f} ms.",
        ]
        lines += ["", "| connections | decisions/s | p50 ms | p99 ms |", "|---|---|---|---|"]
        lines += [
            f"| {p['connections']} | {p['decisions_per_s']:,.0f} | {p['p50_us'] / 1000:.1f} "
            f"| {p['p99_us'] / 1000:.1f} |"
            for p in report["sweep"]
        ]
    return "\n".join(lines) + "\n"


def plot(points: list[dict[str, Any]], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install -e '.[bench]'): no plot", flush=True)
        return
    conns = [p["connections"] for p in points]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(conns, [p["decisions_per_s"] for p in points], "o-", color="tab:blue")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent connections (offered load)")
    ax.set_ylabel("decisions committed/s", color="tab:blue")
    ax2 = ax.twinx()
    ax2.plot(conns, [p["p99_us"] / 1000 for p in points], "s--", color="tab:red")
    ax2.set_ylabel("p99 latency, ms", color="tab:red")
    ax.set_title("workload 1 (single decisions): throughput and p99 vs load")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="about 2 minutes: shorter points, fewer rounds")
    parser.add_argument("--rows", type=int, help="rows pre-loaded for workload 4 (default 5,000,000; quick 200,000)")
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--duration", type=float, help="seconds per load point")
    parser.add_argument("--ids", choices=["random", "ordered"], default="random")
    parser.add_argument("--only", help="comma list of: rounds,w4,sweep,overload,ab (no-op + w1-3 only)")
    parser.add_argument("--sweep", help="comma list of connection counts for the sweep")
    parser.add_argument("--env", action="append", default=[], help="extra server env, NAME=VALUE")
    parser.add_argument("--tag", help="result file name stem (default latest, or quick with --quick)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk (make bench does this)")
    quick = args.quick
    args.tag = args.tag or ("quick" if quick else "latest")
    plan = Plan(
        duration_s=args.duration or (3.0 if quick else 10.0),
        ceiling_s=1.5 if quick else 4.0,
        repeats=args.repeats or (2 if quick else 3),
        rows=args.rows or (200_000 if quick else 5_000_000),
        sweep=[int(c) for c in args.sweep.split(",")]
        if args.sweep
        else [1, 8, 64, 128]
        if quick
        else [1, 2, 4, 8, 16, 32, 64, 128],
        ids=args.ids,
        compare_normal=not quick,
        server_env=dict(item.split("=", 1) for item in args.env),
    )
    only = set((args.only or "rounds,w4,sweep,overload").split(","))
    WORK.mkdir(exist_ok=True)
    RESULTS.mkdir(exist_ok=True)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    command = " ".join(["python -m bench.run", *sys.argv[1:]])  # no machine-specific path
    report: dict[str, Any] = {"started": started, "command": command, "plan": plan.__dict__}
    rounds: list[dict[str, Any]] = []
    if "rounds" in only:
        for n in range(plan.repeats):
            print(f"round {n + 1}/{plan.repeats}", flush=True)
            rounds.append(one_round(plan))
            r = rounds[-1]
            print(
                "  noop {:.0f}/s  w1 {:.0f}/s  w2 {:.0f}/s  w3 {:.0f}/s  w1+idx {:.0f}/s  sqlite100 {:.0f}  "
                "sqlite1000 {:.0f}".format(
                    r["noop"]["decisions_per_s"],
                    r["w1_single"]["decisions_per_s"],
                    r["w2_array100"]["decisions_per_s"],
                    r["w3_ndjson1000"]["decisions_per_s"],
                    r["w1_composite"]["decisions_per_s"],
                    r["ceiling"]["100"],
                    r["ceiling"]["1000"],
                ),
                flush=True,
            )
    if "ab" in only:
        for n in range(plan.repeats):
            r = one_round(plan, pipeline_only=True)
            noop = r["noop"]["decisions_per_s"]
            print(
                f"ab {n + 1}: noop {noop:.0f}/s"
                + "".join(
                    f"  {name} {r[name]['decisions_per_s']:.0f}/s ({r[name]['decisions_per_s'] / noop:.2f} of noop, "
                    f"p99 {r[name]['p99_us'] / 1000:.0f} ms, batch {r[name]['mean_batch']:.0f}, "
                    f"cpu {r[name]['server_cpu_share']:.0%}, {r[name]['cpu_us_per_decision']:.0f} µs/dec)"
                    for name in WORKLOADS
                ),
                flush=True,
            )
    w4: list[dict[str, Any]] = []
    if "w4" in only:
        db = preloaded_db(plan.rows, plan.ids)
        for _ in range(plan.repeats):
            # Workload 1 on an empty file right before, so the ratio is taken under the same machine load.
            empty = fresh_db("w4_reference")
            server = pipeline(empty, plan.server_env)
            try:
                reference = load(server, empty, "single", 1, 64, plan.duration_s, plan.ids)
            finally:
                server.stop()
            server = pipeline(db, plan.server_env)
            try:
                w4.append(load(server, db, "single", 1, 64, plan.duration_s, plan.ids))
            finally:
                server.stop()
            w4[-1]["reference_decisions_per_s"] = reference["decisions_per_s"]
            w4[-1]["vs_empty"] = w4[-1]["decisions_per_s"] / reference["decisions_per_s"]
            print(
                f"  w4 ({count_rows(db):,} rows) {w4[-1]['decisions_per_s']:.0f}/s, "
                f"{w4[-1]['vs_empty']:.2f} of the same load on an empty file",
                flush=True,
            )
    report["rounds"], report["w4"] = rounds, w4
    if "sweep" in only:
        report["sweep"] = sweep(plan)
        plot(report["sweep"], RESULTS / f"{args.tag}-sweep.png")
    if "overload" in only:
        report["overload"] = overload(plan)
    if rounds:
        report["summary"] = summarise(rounds, w4)
        (RESULTS / f"{args.tag}.md").write_text(markdown(report))
    (RESULTS / f"{args.tag}.json").write_text(json.dumps(report, indent=1, default=str))
    print((RESULTS / f"{args.tag}.md").read_text() if rounds else json.dumps(report, default=str)[:2000])


if __name__ == "__main__":
    main()
