"""Reads over HTTP: cavra-ingest's read API against Datasette serving the same SQLite file.

Usage: python -m bench.datasette_compare --db bench/data/reads-1000000.db [--runs 30] [--warmup 3]
Both servers run as processes pinned to core 0 (`taskset -c 0`); this client (aiohttp, one request at
a time) pins itself to core 1. Each query alternates between the two servers run by run, so both see
the same machine load. Datasette serves the file immutable (`-i`), with `sql_time_limit_ms` and
`facet_time_limit_ms` raised to 60 s so every figure is a real one. Writes
bench/results/datasette-<rows>.{json,md}. Not part of the test suite (`make bench-datasette`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from datasette.utils import tilde_encode

from bench.read_bench import pick
from bench.run import Server

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CLIENT_CORE = 1
CAVRA_PORT, DATASETTE_PORT = 18731, 18732
TABLE = "activity_decisions"
FACET_FIELDS = ("decision", "severity", "repository", "agent_id", "policy_pack", "action_type")
TIME_LIMIT_MS = 60_000
Params = list[tuple[str, str]]


@dataclass
class Query:
    """One representative query, written for both servers (the count=false forms are derived)."""

    name: str
    cavra_path: str
    cavra: Params
    datasette: Params
    counted: bool = True  # False: only the no-count forms are timed (deep pages)


def values(db: Path) -> dict[str, Any]:
    """Filter values from the file: the read benchmark's picks, plus a long session and a deep page key."""
    v = pick(db)
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    v["long_session"] = conn.execute(
        "SELECT session_id FROM activity_sessions ORDER BY decision_count DESC, session_id LIMIT 1"
    ).fetchone()[0]
    v["long_session_rows"] = conn.execute(
        "SELECT count(*) FROM activity_decisions WHERE session_id = ?", (v["long_session"],)
    ).fetchone()[0]
    conn.close()
    return v


def query_set(v: dict[str, Any]) -> list[Query]:
    """The representative queries of docs/reading.md, as equivalent requests to each server."""
    day_end = v["moment"]
    day_start = (datetime.fromisoformat(day_end) - timedelta(days=1)).isoformat(timespec="microseconds")
    newest = [("_sort_desc", "timestamp"), ("_size", "50"), ("_shape", "objects"), ("_nosuggest", "1")]
    facets = [("_facet", f) for f in FACET_FIELDS] + [("_facet_size", "10"), ("_size", "0"), ("_nosuggest", "1")]
    session = v["long_session"]
    return [
        Query("unfiltered page 1", "/decisions", [], newest),
        Query("one agent", "/decisions", [("agent_id", v["agent"])], [("agent_id", v["agent"]), *newest]),
        Query(
            "one agent + block",
            "/decisions",
            [("agent_id", v["agent"]), ("decision", "block")],
            [("agent_id", v["agent"]), ("decision", "block"), *newest],
        ),
        Query(
            "one repository + severity=high",
            "/decisions",
            [("repository", v["repository"]), ("severity", "high")],
            [("repository", v["repository"]), ("severity", "high"), *newest],
        ),
        Query(
            "1-day time range",
            "/decisions",
            [("since", day_start), ("until", day_end)],
            [("timestamp__gte", day_start), ("timestamp__lt", day_end), *newest],
        ),
        Query(
            "facets, one agent",
            "/decisions/facets",
            [("agent_id", v["agent"]), ("top", "10")],
            [("agent_id", v["agent"]), *facets],
        ),
        Query("facets, all time", "/decisions/facets", [("top", "10")], facets),
        Query(
            "facets, decision=block",
            "/decisions/facets",
            [("decision", "block"), ("top", "10")],
            [("decision", "block"), *facets],
        ),
        Query(
            "facets, one tenant",
            "/decisions/facets",
            [("tenant_id", v["tenant"]), ("top", "10")],
            [("tenant_id", v["tenant"]), *facets],
        ),
        Query(
            "facets, 1-day time range",
            "/decisions/facets",
            [("since", day_start), ("until", day_end), ("top", "10")],
            [("timestamp__gte", day_start), ("timestamp__lt", day_end), *facets],
        ),
        Query(
            "one policy pack (broad total)",
            "/decisions",
            [("policy_pack", v["pack"])],
            [("policy_pack", v["pack"]), *newest],
        ),
        Query(
            "one tenant (broad total)",
            "/decisions",
            [("tenant_id", v["tenant"])],
            [("tenant_id", v["tenant"]), *newest],
        ),
        Query(
            f"session timeline ({v['long_session_rows']} rows, oldest first)",
            f"/sessions/{session}/decisions",
            [("limit", "500")],
            [
                ("session_id", session),
                ("_sort", "timestamp"),
                ("_size", "500"),
                ("_shape", "objects"),
                ("_nosuggest", "1"),
            ],
        ),
    ]


async def deep_queries(http: aiohttp.ClientSession) -> list[Query]:
    """Page 2,000 of block|require_approval: cavra by offset and by cursor, Datasette by its keyset `_next`."""
    base = [("decision", "block"), ("decision", "require_approval")]
    url = f"http://127.0.0.1:{CAVRA_PORT}/decisions"
    async with http.get(url, params=[*base, ("offset", str(1998 * 50)), ("count", "false")]) as reply:
        before = await reply.json()
    last = before["items"][-1]
    # Datasette's `_next` for `_sort_desc=timestamp` is "<timestamp>,<primary key>", each tilde-encoded.
    token = ",".join(tilde_encode(str(last[k])) for k in ("timestamp", "decision_id"))
    ds = [("decision__in", "block,require_approval"), ("_sort_desc", "timestamp"), ("_size", "50")]
    ds += [("_shape", "objects"), ("_nosuggest", "1"), ("_nocount", "1"), ("_next", token)]
    return [
        Query(
            "page 2,000 by offset (Datasette: keyset _next)",
            "/decisions",
            [*base, ("offset", str(1999 * 50))],
            ds,
            counted=False,
        ),
        Query(
            "page 2,000 by cursor (Datasette: keyset _next)",
            "/decisions",
            [*base, ("cursor", before["next_cursor"])],
            ds,
            counted=False,
        ),
    ]


async def fetch(http: aiohttp.ClientSession, url: str, params: Params) -> tuple[float, dict[str, Any], int]:
    """One request: wall time in ms (until the whole body is read and decoded), body, status."""
    t0 = time.perf_counter()
    async with http.get(url, params=params) as reply:
        raw = await reply.read()
        status = reply.status
    body = json.loads(raw)
    return (time.perf_counter() - t0) * 1000, body, status


def row_ids(body: dict[str, Any]) -> list[str]:
    return [r["decision_id"] for r in body.get("items") or body.get("rows") or []]


def summary(times: list[float]) -> dict[str, float]:
    p99 = statistics.quantiles(times, n=100, method="inclusive")[98] if len(times) > 1 else times[0]
    return {"median": round(statistics.median(times), 2), "p99": round(p99, 2), "runs": len(times)}


async def compare(http: aiohttp.ClientSession, q: Query, db_name: str, runs: int, warmup: int) -> dict[str, Any]:
    """Time the query on both servers, alternating, with and without the count."""
    cavra_url = f"http://127.0.0.1:{CAVRA_PORT}{q.cavra_path}"
    ds_url = f"http://127.0.0.1:{DATASETTE_PORT}/{db_name}/{TABLE}.json"
    facets = q.cavra_path.endswith("/facets")
    variants: dict[str, tuple[str, Params]] = {}
    if q.counted:
        variants["cavra"] = (cavra_url, q.cavra)
        variants["datasette"] = (ds_url, q.datasette)
        # What Datasette does when not told otherwise: the count plus its suggested facets.
        variants["datasette_default"] = (ds_url, [p for p in q.datasette if p[0] != "_nosuggest"])
    if not facets:  # facets always count; a cursor page skips its count by default
        variants["cavra_nocount"] = (cavra_url, [*q.cavra, ("count", "false")])
        nocount = q.datasette if ("_nocount", "1") in q.datasette else [*q.datasette, ("_nocount", "1")]
        variants["datasette_nocount"] = (ds_url, nocount)
    out: dict[str, Any] = {}
    checks: dict[str, Any] = {}
    for name, (url, params) in variants.items():
        _, body, status = await fetch(http, url, params)
        if status != 200:
            out[name] = {"error": f"HTTP {status}: {str(body)[:200]}"}
            continue
        checks[name] = {
            "rows": len(row_ids(body)),
            "first_ids": row_ids(body)[:3],
            "total": body.get("total", body.get("filtered_table_rows_count")),
            "timed_out": body.get("facets_timed_out") or [],
        }
    times: dict[str, list[float]] = {name: [] for name in variants if name not in out}
    for i in range(warmup + runs):
        for name in times:
            url, params = variants[name]
            ms, _, _ = await fetch(http, url, params)
            if i >= warmup:
                times[name].append(ms)
    for name, ts in times.items():
        out[name] = {**summary(ts), **checks[name]}
    # The two servers must answer the same question: same rows, in the same order.
    ids = {name: c["first_ids"] for name, c in checks.items()}
    out["same_rows"] = len({tuple(x) for x in ids.values()}) <= 1 if not facets else None
    return out


def ratio(a: dict[str, Any] | None, b: dict[str, Any] | None, key: str) -> float | None:
    if not a or not b or key not in a or key not in b or not b[key]:
        return None
    return round(a[key] / b[key], 1)


def cell(r: dict[str, Any] | None, counted: bool = False) -> str:
    if not r:
        return "—"
    if "error" in r:
        return "timed out" if "interrupted" in r["error"].lower() else "error"
    # Datasette drops a count or a facet that runs past its time limit and still answers 200.
    late = " (count timed out)" if counted and r.get("total") is None else ""
    late += f" (facets timed out: {', '.join(r['timed_out'])})" if r.get("timed_out") else ""
    return f"{r['median']} / {r['p99']}{late}"


def markdown(report: dict[str, Any]) -> str:
    """The results table: medians / p99 in ms, and Datasette / cavra-ingest ratios of the medians."""
    lines = [
        f"# Reads against Datasette, {report['rows']:,} decisions",
        "",
        f"Command: `{report['command']}`  ",
        f"Datasette {report['datasette_version']}, `{' '.join(report['datasette_args'])}`; "
        f"cavra-ingest `python -m cavra_ingest serve`. Servers on core 0, sequential aiohttp client on core 1, "
        f"{report['runs']} runs after {report['warmup']} warm-ups, the two servers alternating run by run. "
        "Times in ms, whole HTTP request (median / p99). `with count`: cavra-ingest's default (`total` on page 1), "
        "Datasette's `filtered_table_rows_count` (suggested facets off: `_nosuggest=1`); `Datasette default`: "
        "the same request without `_nosuggest=1` (count plus suggested facets); `no count`: "
        "`count=false` / `_nocount=1`. Ratio = Datasette median / cavra-ingest median.",
        "",
        "| query | cavra with count | Datasette with count | ratio | Datasette default | ratio "
        "| cavra no count | Datasette no count | ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in report["queries"].items():
        c, d = r.get("cavra"), r.get("datasette")
        cn, dn = r.get("cavra_nocount"), r.get("datasette_nocount")
        lines.append(
            f"| {name} | {cell(c, True)} | {cell(d, True)} | {ratio(d, c, 'median') or '—'} "
            f"| {cell(r.get('datasette_default'), True)} | {ratio(r.get('datasette_default'), c, 'median') or '—'} "
            f"| {cell(cn)} | {cell(dn)} | {ratio(dn, cn, 'median') or '—'} |"
        )
    lines += [
        "",
        f"Peak RSS (MB): {report['rss_mb']}. Same rows in the same order on both servers: {report['all_same_rows']}.",
        "",
    ]
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    db: Path = args.db.resolve()
    v = values(db)
    log_dir = args.log_dir
    log_dir.mkdir(parents=True, exist_ok=True)
    cavra = Server(["-m", "cavra_ingest", "serve", "--db", str(db), "--port", str(CAVRA_PORT)],
                   port=CAVRA_PORT, log_path=log_dir / "cavra.log")  # fmt: skip
    ds_args = ["serve", "-i", str(db), "-h", "127.0.0.1", "-p", str(DATASETTE_PORT)]
    ds_args += ["--setting", "sql_time_limit_ms", str(TIME_LIMIT_MS)]
    ds_args += ["--setting", "facet_time_limit_ms", str(TIME_LIMIT_MS)]
    try:
        datasette = Server(["-m", "datasette", *ds_args], port=DATASETTE_PORT, log_path=log_dir / "datasette.log")
    except BaseException:
        cavra.stop()
        raise
    report: dict[str, Any] = {"rows": 0, "values": v, "queries": {}}
    try:
        timeout = aiohttp.ClientTimeout(total=TIME_LIMIT_MS / 1000 + 30)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            async with http.get(f"http://127.0.0.1:{DATASETTE_PORT}/-/versions.json") as reply:
                report["datasette_version"] = (await reply.json())["datasette"]["version"]
            _, first, _ = await fetch(http, f"http://127.0.0.1:{CAVRA_PORT}/decisions", [("limit", "1")])
            report["rows"] = first["total"]
            for q in [*query_set(v), *await deep_queries(http)]:
                t0 = time.monotonic()
                report["queries"][q.name] = await compare(http, q, db.stem, args.runs, args.warmup)
                print(f"{q.name}: {time.monotonic() - t0:.1f} s", file=sys.stderr)
        report["rss_mb"] = {"cavra": cavra.peak_rss_mb(), "datasette": datasette.peak_rss_mb()}
    finally:
        datasette.stop()
        cavra.stop()
    report["datasette_args"] = ["datasette", "serve", "-i", db.name, *ds_args[3:]]
    report["all_same_rows"] = all(r["same_rows"] is not False for r in report["queries"].values())
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True, help="a migrated file (read_bench.py builds one)")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--log-dir", type=Path, default=HERE / "data" / "logs")
    args = parser.parse_args()
    os.sched_setaffinity(0, {CLIENT_CORE})
    report = asyncio.run(run(args))
    report["runs"], report["warmup"] = args.runs, args.warmup
    report["command"] = f"python -m bench.datasette_compare --db {args.db} --runs {args.runs} --warmup {args.warmup}"
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"datasette-{report['rows']}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
