"""The console's default view as a user loads it: time to first paint of the decisions table and facets.

Serves FILE with `cavra-ingest serve` (its own process), opens /console in Debian's Chromium through
Playwright (a fresh page each run, server warm), and times from navigation start until the browser has
painted the first result row and the first facet (Element Timing's renderTime, the attributes set by a
script installed before the page's; `seen_by_driver_ms` is the older figure, read once Playwright's poll
had seen them in the DOM).
Also records the API calls' durations from the browser's resource timing.

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
# Installed before the page's own scripts: the browser's own paint time (Element Timing's renderTime) of the
# first result row's text and of the first facet's text, the later of the two being the first paint. The
# attributes are set as the elements arrive (a MutationObserver runs before the next paint). Read back after
# the wait, so the driver's own round trip (Playwright's poll, its answer, the next call) is not counted.
MARK_PAINT = """
(() => {
  window.__cavraPainted = {};
  new PerformanceObserver(list => {
    for (const entry of list.getEntries()) {
      window.__cavraPainted[entry.identifier] ??= entry.renderTime || entry.loadTime;
    }
  }).observe({ type: 'element', buffered: true });
  const texted = selector => [...document.querySelectorAll(selector)].find(
    e => [...e.childNodes].some(n => n.nodeType === Node.TEXT_NODE && n.textContent.trim()));
  // Until both have painted: a view drawn again replaces the marked elements before they paint.
  const observer = new MutationObserver(() => {
    const marks = [['row', document.querySelector('#results-body tr td')], ['facet', texted('#facet-groups *')]];
    for (const [name, element] of marks) {
      if (element && !element.hasAttribute('elementtiming')) element.setAttribute('elementtiming', name);
    }
    if (window.__cavraPainted.row && window.__cavraPainted.facet) observer.disconnect();
  });
  observer.observe(document, { childList: true, subtree: true });
})();
"""
PAINT_TIMES = "() => { const t = window.__cavraPainted; return t.row && t.facet ? Math.max(t.row, t.facet) : 0; }"


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
    seen_by_driver: list[float] = []
    dom: list[float] = []
    api: dict[str, list[float]] = {}
    try:
        wait_ready(url)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            try:
                for run in range(runs + 1):
                    page = browser.new_page()
                    page.add_init_script(MARK_PAINT)
                    page.goto(f"{url}/console")
                    page.wait_for_function(PAINTED, timeout=120_000, polling="raf")
                    seen = page.evaluate("performance.now()")
                    painted = page.wait_for_function(PAINT_TIMES, timeout=10_000).json_value()
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
                    seen_by_driver.append(seen)
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
        # The old measure: performance.now() read by a call made once Playwright's poll had seen the page
        # drawn, so it adds the driver's round trip to the page's time.
        "seen_by_driver_ms": {
            "median": round(statistics.median(seen_by_driver), 1),
            "max": round(max(seen_by_driver), 1),
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
