"""The console's default view as a user loads it: time to first paint of the decisions table and facets.

Serves FILE with `cavra-ingest serve` (its own process), opens /console in Debian's Chromium through
Playwright (a fresh page each run, server warm), and times from navigation start until the table has
rows and the facet box is shown. Also records the API calls' durations from the browser's resource timing.

Usage: python -m bench.console_paint --db bench/data/reads-5000000.db [--runs 10]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
CHROMIUM = os.environ.get("CAVRA_CHROMIUM", "/usr/bin/chromium")
PAINTED = (
    "() => document.querySelectorAll('#results-body tr').length > 0"
    " && !document.getElementById('facets').hidden"
    " && document.querySelectorAll('#facet-groups li, #facet-groups button, #facet-groups a').length > 0"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, deadline_s: float = 600) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=5) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError("server not ready")


def measure(db: Path, runs: int) -> dict[str, object]:
    from playwright.sync_api import sync_playwright

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "CAVRA_ACCESS_LOG": "0"}
    cmd = [sys.executable, "-m", "cavra_ingest", "serve", "--db", str(db), "--port", str(port)]
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    paints: list[float] = []
    dom: list[float] = []
    api: dict[str, list[float]] = {}
    try:
        wait_ready(url)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            try:
                for run in range(runs + 1):
                    page = browser.new_page()
                    page.goto(f"{url}/console")
                    page.wait_for_function(PAINTED, timeout=120_000, polling="raf")
                    painted = page.evaluate("performance.now()")
                    loaded = page.evaluate("performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd")
                    dom.append(loaded)
                    timings = page.evaluate(
                        "performance.getEntriesByType('resource')"
                        ".filter(e => !e.name.includes('/static/')).map(e => [e.name, e.duration])"
                    )
                    page.close()
                    if run == 0:
                        continue  # the first load warms the server's and the browser's caches
                    paints.append(painted)
                    for name, duration in timings:
                        key = name.split("?")[0].replace(url, "")
                        api.setdefault(key, []).append(duration)
            finally:
                browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {
        "runs": runs,
        "first_paint_ms": {
            "median": round(statistics.median(paints), 1),
            "max": round(max(paints), 1),
        },
        "dom_content_loaded_ms_median": round(statistics.median(dom[1:]), 1),
        "api_ms_median": {name: round(statistics.median(v), 1) for name, v in sorted(api.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    with sqlite3.connect(args.db) as db:
        rows = db.execute("SELECT max(rowid) FROM activity_decisions").fetchone()[0]
    # The command as run from the checkout: no machine's own paths in the results.
    db = args.db.resolve()
    shown = db.relative_to(RESULTS.parent.parent) if db.is_relative_to(RESULTS.parent.parent) else Path(db.name)
    report: dict[str, object] = {
        "command": f"python -m bench.console_paint --db {shown} --runs {args.runs}",
        "rows": rows,
    }
    report.update(measure(args.db, args.runs))
    # The machine is shared: how busy it was says how far to trust the figures.
    report["load_average_1m"] = round(os.getloadavg()[0], 1)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"console-paint-{rows}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
