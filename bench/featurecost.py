"""What each feature on the write path costs: server CPU µs per committed decision, feature on and off.

For every feature (tokens and auth, quotas, `received_at`, audit-log leaves, each count family, the access
log, metrics) a server with everything on and one with that feature off take the same load from wrk, one
after the other, `--repeats` times: interleaved pairs in one run, so the machine's drift hits both. The
server's CPU (/proc/PID/stat, every thread) over the committed decisions is the measure; a feature's cost
is the median of (on − off) over its pairs. Each feature has a budget (BUDGET_US, docs/performance.md);
the table marks the ones exceeded and `--check` exits 1 on any.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .run import RESULTS, WORK, Server, count_rows, cpu_seconds, remove_db, wrk

# Budgets in server CPU µs per decision, per load shape: arrays of 100 decisions, single posts.
BUDGET_US: dict[str, dict[str, float]] = {
    "array": {
        "auth": 3,
        "quotas": 3,
        "received_at": 1,
        "audit_log": 15,
        "plain_counts": 8,
        "summed_counts": 4,
        "pair_counts": 8,
        "access_log": 1,
        "metrics": 2,
    },
    "single": {
        "auth": 25,
        "quotas": 8,
        "received_at": 2,
        "audit_log": 25,
        "plain_counts": 8,
        "summed_counts": 4,
        "pair_counts": 8,
        "access_log": 20,
        "metrics": 15,
    },
}


@dataclass
class Variant:
    """How the server runs with one feature off (environment, bench-only switches, token kind)."""

    env: dict[str, str] = field(default_factory=dict)
    off: tuple[str, ...] = ()
    token: str | None = "quota"  # "quota", "plain" or None (no token in the file: auth=auto lets all in)


ALL_ON = Variant()
VARIANTS = {
    "auth": Variant(token=None),  # no token: neither auth nor quotas
    "quotas": Variant(token="plain"),
    "received_at": Variant(off=("received_at",)),
    "audit_log": Variant(env={"CAVRA_AUDIT_LOG": "false"}),
    "plain_counts": Variant(off=("plain_counts",)),
    "summed_counts": Variant(off=("summed_counts",)),
    "pair_counts": Variant(off=("pair_counts",)),
    "access_log": Variant(env={"CAVRA_ACCESS_LOG": "false"}),
    "metrics": Variant(off=("metrics",)),
}
ALSO_OFF = {"auth": "quotas"}  # switching auth off takes the quotas with it: its cost is shown less theirs


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def healthz(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as reply:
        result: dict[str, Any] = json.loads(reply.read())
        return result


def drained(port: int, deadline_s: float = 60.0) -> None:
    end = time.monotonic() + deadline_s
    while healthz(port)["queued_records"] and time.monotonic() < end:
        time.sleep(0.05)


def create_token(db: Path, kind: str) -> str:
    """Create an ingest token in the file; return its secret (the last line `token create` prints)."""
    cmd = [sys.executable, "-m", "cavra_ingest", "token", "create", "--scope", "ingest", "--sqlite", str(db)]
    if kind == "quota":
        cmd += ["--daily-quota", str(10**12)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return out.strip().splitlines()[-1].strip()


def one_run(variant: Variant, mode: str, per_request: int, duration_s: float, connections: int) -> dict[str, float]:
    """Serve a fresh file with the variant, warm up, then measure server CPU per committed decision."""
    port = free_port()
    db = WORK / f"featurecost-{port}.db"
    remove_db(db)
    subprocess.run(
        [sys.executable, "-m", "cavra_ingest", "migrate", "--sqlite", str(db)], check=True, capture_output=True
    )
    token = create_token(db, variant.token) if variant.token else ""
    os.environ["BENCH_TOKEN"] = token
    env = {"CAVRA_ACTIVITY_DB": str(db), "BENCH_FEATURES_OFF": ",".join(variant.off), **variant.env}
    server = Server(["-m", "bench.featureserve", "serve", "--port", str(port)], env, port=port)
    try:
        wrk(port, mode, per_request, connections, 1, "random")  # warm-up: caches, first count rows
        drained(port)
        rows, cpu = count_rows(db), cpu_seconds(server.pid)
        result = wrk(port, mode, per_request, connections, duration_s, "random")
        drained(port)
        used, committed = cpu_seconds(server.pid) - cpu, count_rows(db) - rows
    finally:
        server.stop()
        os.environ.pop("BENCH_TOKEN", None)
        remove_db(db)
        Path(f"{db}.signing-key").unlink(missing_ok=True)
    if committed <= 0 or result.get("status_errors", 0):
        raise RuntimeError(f"run committed {committed} decisions ({result})")
    return {"cpu_us_per_decision": used * 1e6 / committed, "decisions_per_s": committed / duration_s}


def measure(
    names: list[str], mode: str, per_request: int, duration_s: float, repeats: int, connections: int
) -> dict[str, Any]:
    """Interleaved (all on, feature off) pairs; return each feature's median cost and the raw runs."""
    pairs: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for _ in range(repeats):
        for name in names:
            on = one_run(ALL_ON, mode, per_request, duration_s, connections)["cpu_us_per_decision"]
            off = one_run(VARIANTS[name], mode, per_request, duration_s, connections)["cpu_us_per_decision"]
            pairs[name].append((on, off))
    cost = {name: statistics.median(on - off for on, off in runs) for name, runs in pairs.items()}
    for name, other in ALSO_OFF.items():
        if name in cost and other in cost:
            cost[name] -= cost[other]
    all_on = statistics.median(on for runs in pairs.values() for on, _ in runs)
    return {"mode": mode, "per_request": per_request, "all_on_us": all_on, "cost_us": cost, "pairs": pairs}


def table(report: dict[str, Any]) -> tuple[str, list[str]]:
    """The markdown table, and the features over budget."""
    budgets = BUDGET_US[report["mode"]]
    lines = [
        f"Server CPU per decision, {report['mode']} posts of {report['per_request']}: all on"
        f" {report['all_on_us']:.0f} µs (median of every all-on run).",
        "",
        "| feature | cost µs/decision | budget | pairs on/off µs | |",
        "|---|---:|---:|---|---|",
    ]
    exceeded = []
    for name, cost in report["cost_us"].items():
        over = cost > budgets[name]
        if over:
            exceeded.append(name)
        runs = ", ".join(f"{on:.0f}/{off:.0f}" for on, off in report["pairs"][name])
        lines.append(f"| {name} | {cost:+.1f} | {budgets[name]:.0f} | {runs} | {'**over budget**' if over else 'ok'} |")
    return "\n".join(lines), exceeded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=("array", "single"), default="array")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per run")
    parser.add_argument("--repeats", type=int, default=2, help="pairs per feature")
    parser.add_argument("--connections", type=int, default=0, help="wrk connections (default by mode)")
    parser.add_argument("--only", help="comma-separated features (default all)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a feature exceeds its budget")
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    names = args.only.split(",") if args.only else list(VARIANTS)
    per_request = 100 if args.mode == "array" else 1
    connections = args.connections or (4 if args.mode == "array" else 32)
    report = measure(names, args.mode, per_request, args.duration, args.repeats, connections)
    text, exceeded = table(report)
    print(text)
    print("budgets exceeded: " + (", ".join(exceeded) if exceeded else "none"))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"featurecost-{args.mode}.md").write_text(text + "\n")
    (RESULTS / f"featurecost-{args.mode}.json").write_text(json.dumps(report, indent=1))
    if args.check and exceeded:
        sys.exit(1)


if __name__ == "__main__":
    main()
