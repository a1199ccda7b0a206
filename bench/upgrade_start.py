"""A server started on a file whose decision counts were never built: time to ready, write latency meanwhile.

Resets FILE's counts as a file upgraded to 013/017 looks (decisions, no counts: the watermarks at 0), serves
it with `cavra-ingest serve`, and measures the seconds until `/readyz` answers 200, then posts one decision
every 0.2 s (acknowledgement latency) and asks for the unfiltered facets once a second until the counts
have caught up (`/healthz` `counts.lag_rows` 0 with the background folder; at once where open folds
everything first) or `--limit` seconds pass.

Usage: python -m bench.upgrade_start --db COPY_OF_A_PRELOADED_FILE [--limit 900]
The file is written: pass a copy.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from .console_paint import free_port, wait_ready
from .rows import decision

RESULTS = Path(__file__).parent / "results"


def reset_counts(db: Path) -> int:
    with sqlite3.connect(db) as con:
        con.execute("DELETE FROM activity_decision_counts")
        con.execute("UPDATE activity_decision_counts_state SET counted_rowid = 0, paired_rowid = 0")
        return int(con.execute("SELECT max(rowid) FROM activity_decisions").fetchone()[0] or 0)


def call(method: str, url: str, body: object | None = None) -> tuple[int, float, dict[str, object]]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    start = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            status, text = reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read()
    return status, (time.monotonic() - start) * 1000, json.loads(text or b"{}")


def measure(db: Path, limit_s: float) -> dict[str, object]:
    rows = reset_counts(db)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "CAVRA_ACCESS_LOG": "0"}
    cmd = [sys.executable, "-m", "cavra_ingest", "serve", "--db", str(db), "--port", str(port)]
    started = time.monotonic()
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rng = random.Random(1)
    posts: list[float] = []
    facets: list[tuple[int, float]] = []
    try:
        wait_ready(url, deadline_s=limit_s)
        ready_s = time.monotonic() - started
        caught_up_s = None
        next_facets = 0.0
        while time.monotonic() - started < limit_s:
            status, ms, _ = call("POST", f"{url}/decisions", decision(rng, 1000, 100))
            assert status in (200, 201), status
            posts.append(ms)
            if time.monotonic() >= next_facets:
                status, ms, _ = call("GET", f"{url}/decisions/facets")
                facets.append((status, ms))
                next_facets = time.monotonic() + 1.0
            counts = call("GET", f"{url}/healthz")[2].get("counts")
            if not isinstance(counts, dict) or counts.get("lag_rows") == 0:
                caught_up_s = time.monotonic() - started
                break
            time.sleep(0.2)
    finally:
        server.terminate()
        server.wait(timeout=60)
    answered = [ms for status, ms in facets if status == 200]
    return {
        "decisions": rows,
        "ready_s": round(ready_s, 1),
        "counts_caught_up_s": None if caught_up_s is None else round(caught_up_s, 1),
        "posts": len(posts),
        "post_ms": {"median": round(statistics.median(posts), 1), "max": round(max(posts), 1)} if posts else None,
        "facets_calls": len(facets),
        "facets_statuses": sorted({status for status, _ in facets}),
        "facets_ms_median": round(statistics.median(answered), 1) if answered else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--limit", type=float, default=900.0, help="seconds before giving up")
    args = parser.parse_args()
    report = {"command": f"python -m bench.upgrade_start --db {args.db.name}", **measure(args.db, args.limit)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "upgrade-start.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
