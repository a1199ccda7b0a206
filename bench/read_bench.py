"""Read benchmark: load N decisions into a real SQLite file, time the representative queries.

Usage: python bench/read_bench.py --rows 1000000 [--db PATH] [--runs 25] [--keep]
Loads through the real migrations and plain sqlite3 executemany (not the HTTP path: this measures
reads), then times each query through SqliteStore's own methods. Writes bench/results/reads-<rows>.json
and .md. Not part of the test suite (`make bench-reads`).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import random
import sqlite3
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec

from cavra_ingest.store.base import ListQuery
from cavra_ingest.store.migrate import apply_migrations
from cavra_ingest.store.sqlite.listings import DECISIONS
from cavra_ingest.store.sqlite.store import SqliteStore

RESULTS = Path(__file__).parent / "results"
OUTCOMES = (("allow", 70), ("warn", 10), ("block", 8), ("require_approval", 6), ("audit_only", 5))
RARE_OUTCOME = "allow_with_attestation"  # ~1 in 100
SEVERITIES = (("low", 60), ("medium", 25), ("high", 12), ("critical", 3))
ACTIONS = [f"action_{i:02d}" for i in range(20)]
PACKS = [f"pack-{i}" for i in range(8)]
INSERT = """
INSERT INTO activity_decisions (
    decision_id, session_id, agent_id, actor, repository, policy_pack, action_type, target,
    rule_id, decision, severity, timestamp, correlation_id, payload, tenant_id, workspace_id
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
INSERT_SESSION = """
INSERT INTO activity_sessions (
    session_id, agent_id, actor, repository, policy_pack, state, started_at, updated_at,
    decision_count, blocked_count, approval_required_count, payload, tenant_id, workspace_id
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
ENCODER = msgspec.json.Encoder()
START = datetime(2026, 1, 1, tzinfo=UTC)


def weighted(rng: random.Random, table: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([v for v, _ in table], [w for _, w in table])[0]


@dataclasses.dataclass
class Shape:
    """The population: sessions are time-local, each with one agent, repository and tenant."""

    rows: int
    sessions_active: int = 100
    rows_per_window: int = 20_000
    agents: int = 2_000
    repositories: int = 3_000
    tenants: int = 10
    days: int = 60

    @property
    def step_us(self) -> int:
        return self.days * 86_400_000_000 // self.rows


def generate(shape: Shape, seed: int = 7) -> Iterator[tuple[Any, ...]]:
    """Yield decision rows in time order; every 10th row repeats its predecessor's timestamp."""
    rng = random.Random(seed)
    moment = START
    for i in range(shape.rows):
        if i % 10:
            moment = START + timedelta(microseconds=i * shape.step_us)
        window = i // shape.rows_per_window
        session_n = window * shape.sessions_active + rng.randrange(shape.sessions_active)
        session_rng = random.Random(session_n)
        agent = f"agent-{session_rng.randrange(shape.agents):04d}"
        repository = f"org-{session_rng.randrange(30)}/repo-{session_rng.randrange(shape.repositories):04d}"
        tenant = f"tenant-{session_rng.randrange(shape.tenants):02d}"
        workspace = f"{tenant}-ws-{session_rng.randrange(5)}"
        pack = PACKS[session_rng.randrange(len(PACKS))]
        outcome = RARE_OUTCOME if rng.random() < 0.01 else weighted(rng, OUTCOMES)
        severity = weighted(rng, SEVERITIES)
        action = ACTIONS[rng.randrange(len(ACTIONS))]
        rule = f"rule.{action}.{rng.randrange(15)}"
        decision_id = f"dec_{i:010d}{rng.randrange(16**4):04x}"
        stamp = moment.isoformat(timespec="microseconds")
        record = {
            "schema_version": "cavra.decision.v1",
            "decision_id": decision_id,
            "session_id": f"sess-{session_n:07d}",
            "timestamp": stamp,
            "decision": outcome,
            "agent_id": agent,
            "actor": "ai-agent",
            "repository": repository,
            "action_type": action,
            "target": f"src/module_{rng.randrange(500)}/file_{rng.randrange(100)}.py",
            "requested_operation": f"{action} on a file in {repository}",
            "policy_pack": pack,
            "policy_id": pack,
            "rule_id": rule,
            "severity": severity,
            "reason": "matched rule" if outcome != "allow" else None,
            "approver_group": "security" if outcome == "require_approval" else None,
            "evidence_refs": [],
            "correlation_id": f"corr_{i:012x}",
            "tenant_id": tenant,
            "workspace_id": workspace,
        }
        yield (
            decision_id,
            record["session_id"],
            agent,
            "ai-agent",
            repository,
            pack,
            action,
            record["target"],
            rule,
            outcome,
            severity,
            stamp,
            record["correlation_id"],
            ENCODER.encode(record).decode(),
            tenant,
            workspace,
        )


def load(path: Path, shape: Shape, batch: int = 50_000) -> dict[str, Any]:
    """Create the schema through the real migrations and bulk-insert the rows and summaries."""
    apply_migrations(path)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-1048576")
    # Secondary indexes are built after the rows (minutes instead of an hour at 5 M random ids).
    indexes = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'activity_decisions'"
        " AND sql IS NOT NULL"
    ).fetchall()
    for name, _ in indexes:
        conn.execute(f"DROP INDEX {name}")
    sessions: dict[str, list[Any]] = {}
    started = time.perf_counter()
    rows = generate(shape)
    done = 0
    while done < shape.rows:
        chunk = [next(rows) for _ in range(min(batch, shape.rows - done))]
        conn.execute("BEGIN")
        conn.executemany(INSERT, chunk)
        conn.execute("COMMIT")
        for row in chunk:
            s = sessions.setdefault(row[1], [row[2], row[4], row[5], row[11], row[11], 0, 0, 0, row[14], row[15]])
            s[4] = row[11]
            s[5] += 1
            s[6] += row[9] == "block"
            s[7] += row[9] == "require_approval"
        done += len(chunk)
        print(f"\rloaded {done:,}/{shape.rows:,}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    for _, create in indexes:
        conn.execute(create)
    conn.execute("BEGIN")
    conn.executemany(
        INSERT_SESSION,
        [
            (sid, a, "ai-agent", r, p, "completed", st, up, n, b, ap, json.dumps({"session_id": sid}), t, w)
            for sid, (a, r, p, st, up, n, b, ap, t, w) in sessions.items()
        ],
    )
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    elapsed = time.perf_counter() - started
    return {"rows": shape.rows, "sessions": len(sessions), "seconds": round(elapsed, 1)}


def pick(path: Path) -> dict[str, Any]:
    """Choose realistic filter values from the loaded data (a typical agent, a long session, ...)."""
    conn = sqlite3.connect(path)
    one = lambda sql: conn.execute(sql).fetchone()  # noqa: E731
    mid = one("SELECT count(*) FROM activity_decisions")[0] // 2
    row = one(
        "SELECT agent_id, repository, session_id, rule_id, correlation_id, timestamp, action_type, policy_pack,"
        f" tenant_id, workspace_id FROM activity_decisions ORDER BY timestamp DESC LIMIT 1 OFFSET {mid}"
    )
    conn.close()
    keys = ("agent", "repository", "session", "rule", "correlation", "moment", "action", "pack", "tenant", "workspace")
    return dict(zip(keys, row, strict=True))


def queries(v: dict[str, Any]) -> dict[str, ListQuery]:
    """The representative listings, by name."""
    day_end = v["moment"]
    day_start = (datetime.fromisoformat(day_end) - timedelta(days=1)).isoformat(timespec="microseconds")
    # The worst window for day buckets: half of each of two days at its edges.
    noon = datetime.fromisoformat(day_end).replace(hour=12, minute=0, second=0, microsecond=0) - timedelta(days=1)
    noon_start, noon_end = (
        noon.isoformat(timespec="microseconds"),
        (noon + timedelta(days=1)).isoformat(timespec="microseconds"),
    )
    q = ListQuery
    return {
        "unfiltered": q(),
        "agent_id": q(equals=(("agent_id", (v["agent"],)),)),
        "repository": q(equals=(("repository", (v["repository"],)),)),
        "policy_pack": q(equals=(("policy_pack", (v["pack"],)),)),
        "policy_pack, half the rows (4 of 8)": q(equals=(("policy_pack", tuple(PACKS[:4])),)),
        "decision=block": q(equals=(("decision", ("block",)),)),
        "decision=rare": q(equals=(("decision", (RARE_OUTCOME,)),)),
        "severity=critical": q(equals=(("severity", ("critical",)),)),
        "action_type": q(equals=(("action_type", (v["action"],)),)),
        "session_id": q(equals=(("session_id", (v["session"],)),)),
        "tenant_id": q(equals=(("tenant_id", (v["tenant"],)),)),
        "workspace_id": q(equals=(("workspace_id", (v["workspace"],)),)),
        "rule_id": q(equals=(("rule_id", (v["rule"],)),)),
        "correlation_id": q(equals=(("correlation_id", (v["correlation"],)),)),
        "agent+block": q(equals=(("agent_id", (v["agent"],)), ("decision", ("block",)))),
        "repository+severity=high": q(equals=(("repository", (v["repository"],)), ("severity", ("high",)))),
        "block+critical": q(equals=(("decision", ("block",)), ("severity", ("critical",)))),
        "block|require_approval": q(equals=(("decision", ("block", "require_approval")),)),
        "time range 1 day": q(since=day_start, until=day_end),
        "time range 1 day, noon to noon": q(since=noon_start, until=noon_end),
        "tenant+block+1 day": q(
            equals=(("tenant_id", (v["tenant"],)), ("decision", ("block",))), since=day_start, until=day_end
        ),
    }


async def timed(fn: Callable[[], Awaitable[Any]], runs: int, budget_s: float) -> dict[str, Any]:
    """Run fn: the first (cold-ish) run reported apart, then up to `runs` warm runs within a budget."""
    t0 = time.perf_counter()
    await fn()
    first = time.perf_counter() - t0
    samples: list[float] = []
    spent = 0.0
    while len(samples) < runs and (spent < budget_s or len(samples) < 3):
        t0 = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - t0)
        spent += samples[-1]
    samples.sort()
    p99 = samples[min(len(samples) - 1, round(0.99 * (len(samples) - 1)))]
    return {
        "first_ms": round(first * 1000, 2),
        "median_ms": round(statistics.median(samples) * 1000, 2),
        "p99_ms": round(p99 * 1000, 2),
        "runs": len(samples),
    }


def plan(path: Path, query: ListQuery) -> str:
    conn = sqlite3.connect(path)
    sql, params = DECISIONS.select(query)
    detail = "; ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params))
    conn.close()
    return detail


async def measure(path: Path, runs: int, budget_s: float) -> dict[str, Any]:
    """Time every representative query through SqliteStore; return the results by name."""
    store = SqliteStore(path)
    started = time.perf_counter()
    await store.open()  # builds the decision counts (migration 013) of a freshly loaded file
    opened_s = round(time.perf_counter() - started, 1)
    print(f"open  {opened_s} s", file=sys.stderr)
    values = pick(path)
    results: dict[str, Any] = {
        "open_s": opened_s,
        "values": values,
        "pages": {},
        "counts": {},
        "facets": {},
        "deep": {},
    }
    try:
        for name, query in queries(values).items():
            page_q = dataclasses.replace(query, with_total=False)
            results["pages"][name] = await timed(lambda q=page_q: store.list_decisions(q), runs, budget_s)
            results["pages"][name]["plan"] = plan(path, page_q)
            print(f"page  {name:28} {results['pages'][name]['median_ms']:>9} ms", file=sys.stderr)
            results["counts"][name] = await timed(lambda q=query: store.list_decisions(q), runs, budget_s)
            results["counts"][name]["total"] = (await store.list_decisions(query)).total
            print(f"count {name:28} {results['counts'][name]['median_ms']:>9} ms", file=sys.stderr)
        timeline = ListQuery(equals=(("session_id", (values["session"],)),), limit=500, oldest_first=True)
        results["pages"]["session timeline (500, oldest first)"] = await timed(
            lambda: store.list_decisions(timeline), runs, budget_s
        )
        # Page 2,000 of 50: by offset, and by keyset from the key that ends page 1,999.
        for name in ("unfiltered", "block|require_approval"):
            base = dataclasses.replace(queries(values)[name], with_total=False)
            deep_offset = dataclasses.replace(base, offset=1999 * 50)
            before = await store.list_decisions(dataclasses.replace(base, offset=1999 * 50 - 1, limit=1))
            if before.last_key is None:
                continue  # fewer than 2,000 pages at this size
            deep_cursor = dataclasses.replace(base, after=before.last_key)
            page_offset = await store.list_decisions(deep_offset)
            page_cursor = await store.list_decisions(deep_cursor)
            assert page_offset.items == page_cursor.items, "offset and cursor pages differ"
            results["deep"][name] = {
                "page 1": await timed(lambda q=base: store.list_decisions(q), runs, budget_s),
                "page 2000 by offset": await timed(lambda q=deep_offset: store.list_decisions(q), runs, budget_s),
                "page 2000 by cursor": await timed(lambda q=deep_cursor: store.list_decisions(q), runs, budget_s),
            }
            print(f"deep  {name:28} {results['deep'][name]}", file=sys.stderr)
        # Every query of the set: the single filters, the pairs and the windows (the counts serve some).
        for name in queries(values):
            query = queries(values)[name]
            results["facets"][name] = await timed(lambda q=query: store.facets(q, 10), runs, budget_s)
            print(f"facet {name:28} {results['facets'][name]['median_ms']:>9} ms", file=sys.stderr)
    finally:
        await store.close()
    return results


def insert_cost(rows: int, batch: int = 2000) -> dict[str, Any]:
    """Time the same inserts with the 004+005 indexes and with 006 added: the write cost of 006."""
    import shutil
    import tempfile

    from cavra_ingest.store.migrate import migrations_dir

    data = list(generate(Shape(rows=rows)))
    result: dict[str, Any] = {"rows": rows, "batch": batch}
    with tempfile.TemporaryDirectory(dir=Path(__file__).parent / "data") as scratch:
        for label, keep in (("004+005", ("004", "005")), ("004+005+006", ("004", "005", "006"))):
            folder = Path(scratch) / label
            folder.mkdir()
            for migration in migrations_dir().glob("*.sql"):
                if migration.name[:3] in keep:
                    shutil.copy(migration, folder)
            path = Path(scratch) / f"{label}.db"
            apply_migrations(path, folder)
            conn = sqlite3.connect(path, isolation_level=None)
            conn.execute("PRAGMA synchronous=NORMAL")
            # CPU time too: on a shared machine it is steadier than wall time.
            started, cpu_started = time.perf_counter(), time.process_time()
            for start in range(0, rows, batch):
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(INSERT, data[start : start + batch])
                conn.execute("COMMIT")
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
            conn.close()
            result[label] = {
                "seconds": round(elapsed, 2),
                "cpu_seconds": round(cpu, 2),
                "rows_per_s": round(rows / elapsed),
            }
            print(f"insert {label}: {result[label]}", file=sys.stderr)
    result["slowdown"] = round(result["004+005+006"]["seconds"] / result["004+005"]["seconds"], 2)
    result["cpu_slowdown"] = round(result["004+005+006"]["cpu_seconds"] / result["004+005"]["cpu_seconds"], 2)
    return result


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Read benchmark, {report['load']['rows']:,} decisions",
        "",
        f"Command: `{report['command']}`  ",
        f"Load: {report['load']}  ",
        f"File: {report['file_mb']} MB. Times in ms through SqliteStore (aiosqlite); warm median / p99,"
        " first run apart. Listing pages are `count=false`; the count column is the same page with `total`.",
        "",
        "| query | page median | page p99 | page first | with total median | total | plan |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, page in report["pages"].items():
        count = report["counts"].get(name, {})
        lines.append(
            f"| {name} | {page['median_ms']} | {page['p99_ms']} | {page['first_ms']} |"
            f" {count.get('median_ms', '')} | {count.get('total', '')} | {page.get('plan', '')} |"
        )
    lines += ["", "| deep paging | page 1 | page 2000 by offset | page 2000 by cursor |", "|---|---:|---:|---:|"]
    for name, deep in report["deep"].items():
        cells = " | ".join(f"{d['median_ms']} / {d['p99_ms']}" for d in deep.values())
        lines.append(f"| {name} (median / p99) | {cells} |")
    lines += ["", "| facets (top 10, six fields) | median | p99 | first |", "|---|---:|---:|---:|"]
    for name, facet in report["facets"].items():
        lines.append(f"| {name} | {facet['median_ms']} | {facet['p99_ms']} | {facet['first_ms']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--db", type=Path, help="SQLite file (default bench/data/reads-<rows>.db)")
    parser.add_argument("--runs", type=int, default=25, help="warm runs per query (fewer if over budget)")
    parser.add_argument("--budget", type=float, default=3.0, help="seconds of warm runs per query, at least 3 runs")
    parser.add_argument("--reuse", action="store_true", help="reuse an existing loaded file of this size")
    parser.add_argument("--insert-cost", type=int, metavar="ROWS", help="only compare insert time without/with 006")
    args = parser.parse_args()
    if args.insert_cost:
        (Path(__file__).parent / "data").mkdir(parents=True, exist_ok=True)
        cost = {"command": " ".join(["python", *sys.argv]), **insert_cost(args.insert_cost)}
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"reads-insert-cost-{args.insert_cost}.json").write_text(json.dumps(cost, indent=2) + "\n")
        print(json.dumps(cost, indent=2))
        return
    path = args.db or Path(__file__).parent / "data" / f"reads-{args.rows}.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    if args.reuse and path.exists():
        loaded = {"rows": args.rows, "reused": path.name}
    else:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        loaded = load(path, Shape(rows=args.rows))
    report = {
        "command": " ".join(["python", *sys.argv]),
        "sqlite": sqlite3.sqlite_version,
        "load": loaded,
        "file_mb": round(path.stat().st_size / 2**20),
        **asyncio.run(measure(path, args.runs, args.budget)),
    }
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"reads-{args.rows}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
