"""Reads while the counts folder catches up on rows another program wrote, beside the plain GROUP BY.

Builds (or copies) a file of N decisions in ten tenants whose counts were never built, as CAVRA leaves a
file it filled straight: decisions, no count rows, the watermarks at 0. It serves the file with
`cavra-ingest serve`, so the background folder starts on the backlog, and about once a second until the
counts have caught up it asks the server for the unfiltered facets and one tenant's total, and runs the
same questions as plain statements on the table from this process (`GROUP BY` per facet field, `count(*)`):
side by side, at the same moments. Goals (docs/performance.md): the facets no slower than the plain
`GROUP BY`, a tenant's total under 200 ms, during the fold.

Usage: python -m bench.fold_reads [--rows 1000000] [--template FILE] [--limit 900]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from cavra_ingest.store.dimensions import FACET_FIELDS

from .console_paint import free_port, wait_ready
from .preload import preload

RESULTS = Path(__file__).parent / "results"
WORK = Path(__file__).parent / "work"
TENANTS = 10
PLAIN_FACETS = " UNION ALL ".join(
    f"SELECT '{name}', {name}, count(*) FROM activity_decisions GROUP BY {name}" for name in FACET_FIELDS
)
PLAIN_TOTAL = "SELECT count(*) FROM activity_decisions WHERE tenant_id = ?"


def uncounted_copy(template: Path, path: Path) -> int:
    """Copy a pre-loaded file, spread its decisions over the tenants, and drop its counts."""
    shutil.copy(template, path)
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA cache_size=-262144")
        db.execute("BEGIN")
        # The counts' update triggers would move counts that are dropped next anyway.
        triggers = db.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND name LIKE '%counts_update'"
        ).fetchall()
        for name, _ in triggers:
            db.execute(f"DROP TRIGGER {name}")
        db.execute(f"UPDATE activity_decisions SET tenant_id = 't' || (rowid % {TENANTS})")
        for _, sql in triggers:
            db.execute(sql)
        db.execute("DELETE FROM activity_decision_counts")
        db.execute("UPDATE activity_decision_counts_state SET counted_rowid = 0, paired_rowid = 0")
        db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return int(db.execute("SELECT max(rowid) FROM activity_decisions").fetchone()[0] or 0)
    finally:
        db.close()


def timed_get(url: str) -> tuple[float, dict[str, object]]:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as reply:
        body = json.loads(reply.read())
    return (time.perf_counter() - start) * 1000, body


def timed_sql(db: sqlite3.Connection, sql: str, *params: object) -> float:
    start = time.perf_counter()
    db.execute(sql, params).fetchall()
    return (time.perf_counter() - start) * 1000


def measure(path: Path, rows: int, limit_s: float) -> dict[str, object]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "CAVRA_ACCESS_LOG": "0"}
    cmd = [sys.executable, "-m", "cavra_ingest", "serve", "--db", str(path), "--port", str(port)]
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    plain = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    plain.execute("PRAGMA cache_size=-262144")
    samples: list[dict[str, float]] = []
    started = time.monotonic()
    caught_up_s = None
    try:
        wait_ready(url)
        while time.monotonic() - started < limit_s:
            lag = timed_get(f"{url}/healthz")[1].get("counts", {})
            lag_rows = int(lag.get("lag_rows", 0)) if isinstance(lag, dict) else 0
            if lag_rows == 0:
                caught_up_s = time.monotonic() - started
                break
            samples.append(
                {
                    "unseen": lag_rows / rows,
                    "facets_ms": timed_get(f"{url}/decisions/facets")[0],
                    "plain_facets_ms": timed_sql(plain, PLAIN_FACETS),
                    "total_ms": timed_get(f"{url}/decisions?tenant_id=t3&limit=1")[0],
                    "plain_total_ms": timed_sql(plain, PLAIN_TOTAL, "t3"),
                }
            )
            time.sleep(1.0)
        after = {
            "facets_ms": statistics.median(timed_get(f"{url}/decisions/facets")[0] for _ in range(5)),
            "total_ms": statistics.median(timed_get(f"{url}/decisions?tenant_id=t3&limit=1")[0] for _ in range(5)),
        }
    finally:
        plain.close()
        server.terminate()
        server.wait(timeout=60)

    def median(key: str) -> float | None:
        values = [s[key] for s in samples]
        return round(statistics.median(values), 1) if values else None

    ratios = [s["facets_ms"] / s["plain_facets_ms"] for s in samples]
    return {
        "decisions": rows,
        "samples_during_fold": len(samples),
        "counts_caught_up_s": None if caught_up_s is None else round(caught_up_s, 1),
        "facets_ms_median": median("facets_ms"),
        "plain_facets_ms_median": median("plain_facets_ms"),
        "facets_over_plain_median": round(statistics.median(ratios), 2) if ratios else None,
        "facets_over_plain_max": round(max(ratios), 2) if ratios else None,
        "tenant_total_ms_median": median("total_ms"),
        "tenant_total_ms_max": round(max(s["total_ms"] for s in samples), 1) if samples else None,
        "plain_tenant_total_ms_median": median("plain_total_ms"),
        "after_catch_up_ms": {k: round(v, 1) for k, v in after.items()},
        "samples": [{k: round(v, 3) for k, v in s.items()} for s in samples],
        "load_average_1m": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--template", type=Path, help="a bench.preload file of --rows decisions (else built)")
    parser.add_argument("--limit", type=float, default=900.0, help="seconds before giving up")
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    template = args.template or WORK / f"preload-{args.rows}.db"
    if not template.exists():
        preload(template, args.rows)
    path = WORK / "fold-reads.db"
    rows = uncounted_copy(template, path)
    report = {"command": f"python -m bench.fold_reads --rows {args.rows}", **measure(path, rows, args.limit)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"fold-reads-{args.rows}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=2))


if __name__ == "__main__":
    main()
