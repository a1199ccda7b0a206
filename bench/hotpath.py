"""Single-decision POSTs: server CPU per decision beside the no-op handler, split by thread, in one run.

`python -m bench.hotpath [--duration 10] [--repeats 2] [--profile] [--env NAME=VALUE]` runs, in turn on
core 0 and driven by wrk from core 1 (w1: one ~650 B decision per POST, 64 connections):

- the no-op handler (bench/noop_server.py), the ceiling;
- the real app with a sink that answers at once (bench/null_sink_server.py): what a request costs the
  event loop apart from the store (middlewares, body read, validation, reply);
- the real `python -m cavra_ingest serve` on a fresh file in bench/work/;
- the same app committing with plain `sqlite3` (bench/plain_sink_server.py): the app beside the layout's
  floor on the one core, the most any store could give single posts here.

Each round reports throughput, the ratio to the no-op handler, CPU µs per decision and the pipeline's
CPU split between the event-loop (main) thread and the others (the busiest is the SQLite writer), from
/proc/<pid>/task/*/stat, and the writer's mean batch and commit time. `--profile` records the
pipeline's last round with py-spy (collapsed stacks in bench/work/hotpath-*.txt; `pip install py-spy`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from . import ceiling
from .run import PORT, TICK, WORK, Plan, Server, count_rows, drained, fresh_db, healthz, pipeline, uvloop_flag, wrk


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user+system) of each thread of a process, by thread id."""
    out: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # a thread that ended meanwhile
            continue
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / TICK
    return out


def commit_totals(port: int) -> tuple[float, float]:
    """(seconds, transactions) the writer spent committing so far, from /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("cavra_writer_commit_duration"))
    if "cavra_writer_commit_duration_seconds_sum" not in values:  # a bench sink that is not the writer
        return 0.0, 0.0
    return float(values["cavra_writer_commit_duration_seconds_sum"]), float(
        values["cavra_writer_commit_duration_seconds_count"]
    )


def measure(server: Server, db: Path | None, duration_s: float, profile: Path | None = None) -> dict[str, Any]:
    """Drive one server with w1 and return throughput, CPU per decision and the per-thread split."""
    before_rows = count_rows(db) if db else 0
    before_writer = healthz()["writer"] if db else {}
    before_commit = commit_totals(server.port) if db else (0.0, 0.0)
    spy = None
    if profile is not None:
        spy_bin = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        cmd = [spy_bin, "record", "--pid", str(server.pid), "--duration", str(round(duration_s)), "--rate", "200"]
        spy = subprocess.Popen(
            [*cmd, "--threads", "--format", "raw", "-o", str(profile)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    before = thread_cpu(server.pid)
    result = wrk(server.port, "single", 1, 64, duration_s, "random")
    after = thread_cpu(server.pid)
    if spy is not None:
        spy.wait(60)
    seconds = result["duration_us"] / 1e6
    used = {tid: after[tid] - before.get(tid, 0.0) for tid in after}
    main = used.pop(server.pid, 0.0)
    total = main + sum(used.values())
    if db is None:
        decisions = result["requests"]
        batch = commit_ms = None
    else:
        writer = drained()["writer"]
        decisions = count_rows(db) - before_rows
        transactions = writer["transactions"] - before_writer["transactions"]
        batch = (writer["records"] - before_writer["records"]) / max(1, transactions)
        commit = commit_totals(server.port)
        commit_ms = (commit[0] - before_commit[0]) * 1000 / max(1.0, commit[1] - before_commit[1])
    per = 1e6 / max(1, decisions)
    return {
        "decisions_per_s": decisions / seconds,
        "p50_ms": result["p50_us"] / 1000,
        "p99_ms": result["p99_us"] / 1000,
        "non_2xx": result["status_errors"],
        "mean_batch": batch,
        # Wall time of one store.write (transaction and COMMIT's fsync) as the writer saw it.
        "commit_ms": commit_ms,
        "cpu_share": total / seconds,
        "cpu_us_per_decision": total * per,
        "loop_us_per_decision": main * per,
        # The busiest other thread is the store's writer; the rest (audit log, token look-ups) are small.
        "store_us_per_decision": max(used.values(), default=0.0) * per,
        "other_us_per_decision": (sum(used.values()) - max(used.values(), default=0.0)) * per,
    }


def one_round(duration_s: float, env: dict[str, str], profile: Path | None) -> dict[str, Any]:
    plan = Plan(duration_s, 0, 1, 0, [], "random", False, env)
    noop = Server(["-m", "bench.noop_server", "--port", str(PORT), *uvloop_flag(plan)])
    try:
        base = measure(noop, None, duration_s)
    finally:
        noop.stop()
    db = fresh_db("hotpath")
    # The same app with a sink that answers at once: the loop's own cost per request, without the store.
    null = Server(["-m", "bench.null_sink_server", "--port", str(PORT)], {"CAVRA_ACTIVITY_DB": str(db), **env})
    try:
        loop_only = measure(null, None, duration_s)
    finally:
        null.stop()
    server = pipeline(db, env)
    try:
        head = measure(server, db, duration_s, profile)
    finally:
        server.stop()
    # The same app committing with plain sqlite3 (bench/plain_sink_server.py): the app's loop and the layout's
    # floor sharing the server's one core, the most any store could give single posts here.
    plain_db = fresh_db("hotpath-plain")
    plain = Server(["-m", "bench.plain_sink_server", "--port", str(PORT)], {"CAVRA_ACTIVITY_DB": str(plain_db), **env})
    try:
        plain_app = measure(plain, plain_db, duration_s)
    finally:
        plain.stop()
    # The storage floor at the batch size single posts gave: plain sqlite3 into the same layout, no counts,
    # no audit log, no Python between statements. Single posts cannot outrun it, whatever the app does.
    batch = max(1, round(head["mean_batch"] or 1))
    floor = ceiling.measure(fresh_db("hotpath-floor"), batch, min(duration_s, 5.0))
    floor["cpu_us_per_decision"] = floor["cpu_share"] * 1e6 / floor["rows_per_s"]
    return {
        "noop": base,
        "null_sink": loop_only,
        "w1": head,
        "plain_sink": plain_app,
        "plain_sqlite3": {
            **floor,
            "batch": batch,
            "cpu_us_per_decision": floor["cpu_share"] * 1e6 / floor["rows_per_s"],
        },
        "w1_vs_noop": head["decisions_per_s"] / base["decisions_per_s"],
        "null_sink_vs_noop": loop_only["decisions_per_s"] / base["decisions_per_s"],
        "w1_vs_null_sink": head["decisions_per_s"] / loop_only["decisions_per_s"],
        "plain_sqlite3_vs_null_sink": floor["rows_per_s"] / loop_only["decisions_per_s"],
        "plain_sink_vs_null_sink": plain_app["decisions_per_s"] / loop_only["decisions_per_s"],
        "w1_vs_plain_sink": head["decisions_per_s"] / plain_app["decisions_per_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per point")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--profile", action="store_true", help="py-spy flame graph of the last pipeline round")
    parser.add_argument("--env", action="append", default=[], help="extra server env, NAME=VALUE")
    parser.add_argument("--json", type=Path, help="also write the rounds here")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk (make bench does this)")
    WORK.mkdir(exist_ok=True)
    env = dict(item.split("=", 1) for item in args.env)
    rounds = []
    for n in range(args.repeats):
        profile = None
        if args.profile and n == args.repeats - 1:
            profile = WORK / f"hotpath-{time.strftime('%H%M%S')}.txt"
        rounds.append(one_round(args.duration, env, profile))
        r, noop, w1, null = rounds[-1], rounds[-1]["noop"], rounds[-1]["w1"], rounds[-1]["null_sink"]
        print(
            f"round {n + 1}: noop {noop['decisions_per_s']:.0f}/s {noop['cpu_us_per_decision']:.0f} µs/req | "
            f"null sink {null['decisions_per_s']:.0f}/s {null['cpu_us_per_decision']:.0f} µs/req "
            f"(loop {null['loop_us_per_decision']:.0f}) | "
            f"w1 {w1['decisions_per_s']:.0f}/s ({r['w1_vs_noop']:.3f} of noop), p99 {w1['p99_ms']:.0f} ms, "
            f"batch {w1['mean_batch']:.0f} in {w1['commit_ms']:.1f} ms, cpu {w1['cpu_share']:.0%}, "
            f"{w1['cpu_us_per_decision']:.0f} µs/dec = "
            f"loop {w1['loop_us_per_decision']:.0f} + store {w1['store_us_per_decision']:.0f} "
            f"+ other {w1['other_us_per_decision']:.0f} | {r['w1_vs_null_sink']:.2f} of the null sink; plain sqlite3"
            f" at batch {r['plain_sqlite3']['batch']}: {r['plain_sqlite3']['rows_per_s']:.0f}/s"
            f" ({r['plain_sqlite3_vs_null_sink']:.2f} of the null sink) | plain-sqlite3 app"
            f" {r['plain_sink']['decisions_per_s']:.0f}/s, batch {r['plain_sink']['mean_batch']:.0f},"
            f" {r['plain_sink']['cpu_us_per_decision']:.0f} µs/dec ({r['plain_sink_vs_null_sink']:.2f} of the null"
            f" sink; w1 {r['w1_vs_plain_sink']:.2f} of it)" + (f"; profile {profile}" if profile else ""),
            flush=True,
        )
    summary = {
        key: statistics.median(r["w1"][key] for r in rounds)
        for key in ("decisions_per_s", "cpu_us_per_decision", "loop_us_per_decision", "store_us_per_decision")
    }
    summary["noop_us_per_request"] = statistics.median(r["noop"]["cpu_us_per_decision"] for r in rounds)
    summary["null_sink_us_per_request"] = statistics.median(r["null_sink"]["cpu_us_per_decision"] for r in rounds)
    summary["w1_vs_noop"] = statistics.median(r["w1_vs_noop"] for r in rounds)
    summary["null_sink_vs_noop"] = statistics.median(r["null_sink_vs_noop"] for r in rounds)
    summary["w1_vs_null_sink"] = statistics.median(r["w1_vs_null_sink"] for r in rounds)
    summary["plain_sqlite3_vs_null_sink"] = statistics.median(r["plain_sqlite3_vs_null_sink"] for r in rounds)
    summary["plain_sink_vs_null_sink"] = statistics.median(r["plain_sink_vs_null_sink"] for r in rounds)
    summary["w1_vs_plain_sink"] = statistics.median(r["w1_vs_plain_sink"] for r in rounds)
    summary["plain_sqlite3_us_per_decision"] = statistics.median(
        r["plain_sqlite3"]["cpu_us_per_decision"] for r in rounds
    )
    with open("/proc/loadavg") as handle:
        summary["loadavg"] = handle.read().split()[:3]
    print("median:", json.dumps({k: v if isinstance(v, list) else round(v, 3) for k, v in summary.items()}))
    if args.json:
        args.json.write_text(json.dumps({"rounds": rounds, "summary": summary, "env": env}, indent=1))


if __name__ == "__main__":
    main()
