"""Decision counts (migration 013, store/counts.py): facets and totals from them equal a scan of the rows,
also after another program (CAVRA) inserts, overwrites or deletes decisions straight in the file."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import random
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from cavra_ingest.core.models import DecisionIn, normalize
from cavra_ingest.http.keys import RUNTIME_KEY, STORE_KEY
from cavra_ingest.store import dimensions
from cavra_ingest.store.base import FACET_FIELDS, Facets, ListQuery, facets_from_rows
from cavra_ingest.store.sqlite import countplan, countreads, counts
from cavra_ingest.store.sqlite.listings import DECISIONS
from cavra_ingest.store.sqlite.store import SqliteStore

DECODER = msgspec.json.Decoder(DecisionIn)
START = datetime(2026, 3, 1, tzinfo=UTC)
TENANTS = ("acme", "globex", None)
OUTCOMES = ("allow", "block", "warn", "require_approval")
SEVERITIES = ("low", "high", "critical")
REPOS = ("acme/a", "acme/b", "globex/c")


def record(rng: random.Random, n: int) -> dict[str, Any]:
    moment = START + timedelta(seconds=rng.randrange(3 * 86_400))
    tenant = rng.choice(TENANTS)
    return {
        "decision_id": f"d-{n:05d}",
        "session_id": f"s-{tenant}-{rng.randrange(5)}",  # a session keeps its first decision's tenant
        "agent_id": f"agent-{rng.randrange(5)}",
        "repository": rng.choice(REPOS),
        "decision": rng.choice(OUTCOMES),
        "severity": rng.choice(SEVERITIES),
        "action_type": rng.choice(("write_file", "shell_command")),
        "rule_id": f"rule.{rng.randrange(4)}",
        "policy_pack": rng.choice(("baseline", "strict")),
        "tenant_id": tenant,
        "workspace_id": rng.choice(("ws-1", "ws-2", None)),
        "timestamp": moment.isoformat().replace("+00:00", "Z"),
    }


# What CAVRA's own store fills in when it inserts a decision; tests override the fields they look at.
CAVRA_ROW: dict[str, Any] = {
    "session_id": "s",
    "agent_id": "a",
    "actor": "ai",
    "policy_pack": "p",
    "action_type": "w",
    "rule_id": "r",
    "decision": "allow",
    "severity": "low",
    "timestamp": "2026-03-01T00:00:00.000000+00:00",
    "payload": "{}",
}

# What only CAVRA writes: a `Z` time (007's trigger normalises it), NULL repository and correlation id, a
# severity outside the enum.
ODD_CAVRA_ROW: dict[str, Any] = {
    "repository": None,
    "action_type": "write_file",
    "target": "",
    "rule_id": "rule.9",
    "decision": "block",
    "severity": "informational",
    "timestamp": "2026-03-02T10:30:00Z",
    "correlation_id": None,
    "tenant_id": "acme",
}


def cavra_insert(db: sqlite3.Connection, decision_id: str, **fields: Any) -> None:
    """Insert a decision straight into the file, as CAVRA does: no writer, no counts, only the file's triggers."""
    row = {"decision_id": decision_id, **CAVRA_ROW, **fields}
    columns, marks = ", ".join(row), ", ".join("?" * len(row))
    db.execute(f"INSERT INTO activity_decisions ({columns}) VALUES ({marks})", tuple(row.values()))


def without_id(fields: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if name != "decision_id"}


def accepted(fields: dict[str, Any]) -> Any:
    return normalize(DECODER.decode(msgspec.json.encode({k: v for k, v in fields.items() if v is not None})), [])


def scanned_facets(path: Path, query: ListQuery, top: int) -> Facets:
    """The answer without counts: the listing's own facet statement over the rows."""
    sql, params = DECISIONS.facets(query, FACET_FIELDS)
    with sqlite3.connect(path) as db:
        return facets_from_rows(db.execute(sql, params).fetchall(), top)


def scanned_total(path: Path, query: ListQuery) -> int:
    sql, params = DECISIONS.count(query)
    with sqlite3.connect(path) as db:
        return int(db.execute(sql, params).fetchone()[0])


def moment(hours: float) -> str:
    return (START + timedelta(hours=hours)).isoformat(timespec="microseconds")


def queries(rng: random.Random) -> list[ListQuery]:
    """Windows at random edges (unaligned, hour- and day-aligned, open-ended) crossed with keyed filters."""
    windows: list[tuple[str | None, str | None]] = [(None, None), (moment(24), moment(48)), (moment(5), None)]
    windows += [(None, moment(30.5)), (moment(0.25), moment(0.75)), (moment(23), moment(49))]
    for _ in range(6):
        lo = rng.uniform(-2, 74)
        windows.append((moment(lo), moment(lo + rng.uniform(0, 50))))
    filters: list[tuple[tuple[str, tuple[str, ...]], ...]] = [(), (("decision", ("block",)),)]
    filters += [(("tenant_id", ("acme",)),), (("tenant_id", ("globex",)), ("decision", ("block", "warn")))]
    # Facets also come from the pair rows of one paired filter (any values), with the keyed ones.
    filters += [(("policy_pack", ("strict",)),), (("severity", ("high", "critical")), ("decision", ("block",)))]
    filters += [(("tenant_id", ("acme",)), ("action_type", ("shell_command",)))]
    filters += [(("workspace_id", ("ws-1",)),), (("rule_id", ("rule.1", "rule.2")), ("decision", ("block",)))]
    out = [ListQuery(equals=f, since=lo, until=hi) for lo, hi in windows for f in filters]
    # Totals also take one counted field, alone or with the keyed ones.
    out += [ListQuery(equals=(("severity", ("critical",)),)), ListQuery(equals=(("repository", ("acme/b", "x")),))]
    out += [ListQuery(equals=(("tenant_id", ("acme",)), ("rule_id", ("rule.1",))), since=moment(7.5))]
    return out


async def check_all(store: SqliteStore, path: Path, rng: random.Random) -> None:
    for query in queries(rng):
        page = await store.list_decisions(query)
        assert page.total == scanned_total(path, query), query
        if countplan.servable(query, facets=True) is not None:
            # top=1 and 2 cut through ties: the counts' SQL ranking must break them as facets_from_rows does.
            for top in (100, 2, 1):
                assert await store.facets(query, top) == scanned_facets(path, query, top), (query, top)


@pytest.fixture(params=[1, 250])
async def store(tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    # Every batch folds the plain counts, so the answers below come from them (waiting rows have a test of
    # their own); pair rows folded with every batch, or every 250 rows (reads then also count those waiting).
    monkeypatch.setattr(counts, "FOLD_ROWS", 1)
    monkeypatch.setattr(counts, "PAIR_BATCH", request.param)
    s = SqliteStore(tmp_path / "c.db")
    await s.open()
    yield s
    await s.close()


def state(path: Path) -> tuple[int, int]:
    with sqlite3.connect(path) as db:
        return db.execute(counts.STATE).fetchone()


@pytest.mark.slow
async def test_counts_equal_a_scan_for_every_window_and_keyed_filter(store, tmp_path):
    rng = random.Random(3)
    for start in range(0, 600, 60):
        await store.write([accepted(record(rng, n)) for n in range(start, start + 60)])
    counted, newest = state(store.path)
    assert counted == newest == 600
    await check_all(store, store.path, rng)


@pytest.mark.slow
async def test_rows_cavra_inserts_are_counted_at_once_and_folded_by_the_next_batch(store):
    rng = random.Random(5)
    await store.write([accepted(record(rng, n)) for n in range(200)])
    with sqlite3.connect(store.path) as db:
        # CAVRA's own insert: a `Z` time (007's trigger normalises it), a NULL repository, an odd severity.
        cavra_insert(db, "cavra-1", session_id="s-1", agent_id="agent-9", policy_pack="baseline", **ODD_CAVRA_ROW)
    assert state(store.path) == (200, 201)
    await check_all(store, store.path, rng)
    facets = await store.facets(ListQuery(equals=(("tenant_id", ("acme",)),)), 100)
    assert ("informational", 1) in facets.fields["severity"]
    assert (None, 1) in facets.fields["repository"]
    await store.write([accepted(record(rng, 500))])
    assert state(store.path) == (202, 202)
    await check_all(store, store.path, rng)


@pytest.mark.slow
async def test_cavra_overwriting_and_deleting_counted_rows_moves_their_counts(store):
    rng = random.Random(11)
    await store.write([accepted(record(rng, n)) for n in range(300)])
    with sqlite3.connect(store.path) as db:
        # CAVRA overwrites in place (its upsert), with a time in another day and hour, written with an offset.
        db.execute(
            "UPDATE activity_decisions SET decision = 'block', severity = 'critical', tenant_id = 'globex',"
            " timestamp = '2026-03-03T01:15:00+02:00' WHERE decision_id IN ('d-00001', 'd-00002', 'd-00003')"
        )
        # A workspace alone moves its pair rows (020's trigger).
        db.execute("UPDATE activity_decisions SET workspace_id = 'ws-1' WHERE decision_id IN ('d-00004', 'd-00005')")
        db.execute("DELETE FROM activity_decisions WHERE decision_id >= 'd-00250'")
    await check_all(store, store.path, rng)


@pytest.mark.slow
async def test_a_backlog_is_read_from_the_table_and_folded_by_the_background_folder_in_steps(store, monkeypatch):
    rng = random.Random(13)
    monkeypatch.setattr(counts, "READ_LAG_ROWS", 5)  # reads of this backlog go to a heavy reader
    monkeypatch.setattr(counts, "PAIR_READ_LAG", 5)
    monkeypatch.setattr(counts, "BATCH_FOLD_MAX", 40)  # a batch leaves a backlog over 40 to the folder
    monkeypatch.setattr(counts, "PLAIN_FROM", 1.0)  # the counts and a scan of the backlog, even of all of it
    with sqlite3.connect(store.path) as db:
        for n in range(50):
            cavra_insert(db, f"cavra-{n:03d}", **without_id(record(rng, n)))
    assert state(store.path) == (0, 50)
    heavy = []
    lend, spare = store.readers.heavy, store.readers.spare
    monkeypatch.setattr(store.readers, "heavy", lambda: heavy.append(1) or lend())
    monkeypatch.setattr(store.readers, "spare", lambda wanted: spare(False))  # a long edge's second reader is heavy too
    await check_all(store, store.path, rng)  # exact, and no read folded anything
    assert heavy and state(store.path) == (0, 50)
    await store.write([accepted(record(rng, 50))])  # 51 waiting: more than a batch folds
    assert state(store.path) == (0, 51)
    steps = []
    while True:
        left, upto = await store.fold_counts(20)
        steps.append((left, upto))
        if not left:
            break
    # Twenty decisions per transaction, each step's watermark committed on its own.
    assert [upto for _, upto in steps] == [20, 40, 51] and state(store.path) == (51, 51)
    with sqlite3.connect(store.path) as db:
        # Fewer pair rows waiting than a batch folds are no backlog: reads count them, as between batches.
        paired = 51 if counts.PAIR_BATCH <= 51 else 0
        assert db.execute(counts.PAIR_STATE).fetchone() == (paired, 51)
    heavy.clear()
    await check_all(store, store.path, rng)
    # Caught up: the plain readers again (but for pair reads, while their 51 waiting rows exceed the lag of 5).
    assert bool(heavy) == (paired == 0)
    assert await store.fold_counts(20) == (0, 51)  # nothing waits: no write transaction at all


async def test_a_read_of_a_mostly_uncounted_table_runs_straight_on_the_rows(store, monkeypatch):
    # Unseen rows are read whole by rowid and sorted: past a share of the table, a plain GROUP BY is cheaper.
    rng = random.Random(17)
    monkeypatch.setattr(counts, "READ_LAG_ROWS", 5)
    monkeypatch.setattr(counts, "PAIR_READ_LAG", 5)
    monkeypatch.setattr(counts, "BATCH_FOLD_MAX", 5)  # the store's own batches leave the backlog alone
    built: list[str] = []

    def spied(name: str) -> Any:
        real = getattr(countreads, name)
        return lambda *args: built.append(name) or real(*args)

    for name in ("total_statements", "facet_scans", "histogram_statements", "bounds_statements"):
        monkeypatch.setattr(countreads, name, spied(name))

    async def check() -> None:
        await check_all(store, store.path, rng)
        for query in (ListQuery(), ListQuery(equals=(("tenant_id", ("acme",)),))):
            assert sorted(await store.histogram(query, dimensions.DAY)) == scanned_histogram(store.path, query)
            sql, params = DECISIONS.bounds(query)
            with sqlite3.connect(store.path) as db:
                assert await store.time_bounds(query) == db.execute(sql, params).fetchone()

    for start in range(0, 30, 5):
        await store.write([accepted(record(rng, n)) for n in range(start, start + 5)])
    with sqlite3.connect(store.path) as db:
        for n in range(30, 38):  # 8 of 38 unseen: under a quarter, the counts and a scan of the 8
            cavra_insert(db, f"cavra-{n:03d}", **without_id(record(rng, n)))
    await check()
    assert {"total_statements", "facet_scans", "histogram_statements", "bounds_statements"} <= set(built)
    built.clear()
    with sqlite3.connect(store.path) as db:
        for n in range(38, 60):  # 30 of 60 unseen: the rows alone, exact all the same
            cavra_insert(db, f"cavra-{n:03d}", **without_id(record(rng, n)))
    assert state(store.path) == (30, 60)
    await check()
    assert built == []
    while (await store.fold_counts(100))[0]:
        pass
    await check()  # caught up: from the counts again
    assert "facet_scans" in built


@pytest.mark.slow
async def test_the_writer_folds_once_enough_decisions_wait_and_reads_count_them_until_then(store, monkeypatch):
    rng = random.Random(29)
    monkeypatch.setattr(counts, "FOLD_ROWS", 100)
    await store.write([accepted(record(rng, n)) for n in range(60)])
    assert state(store.path) == (0, 60)  # waiting: read from the table in each read's snapshot
    await check_all(store, store.path, rng)
    for tenant in ("acme", None):
        histogram_query = ListQuery(equals=(("tenant_id", (tenant,)),) if tenant else ())
        assert sorted(await store.histogram(histogram_query, dimensions.DAY)) == scanned_histogram(
            store.path, histogram_query
        )
    await store.write([accepted(record(rng, n)) for n in range(60, 99)])
    assert state(store.path) == (0, 99)
    await store.write([accepted(record(rng, 99))])  # the hundredth waiting decision: all are folded
    assert state(store.path) == (100, 100)
    await check_all(store, store.path, rng)
    await store.write([accepted(record(rng, n)) for n in range(100, 130)])
    assert state(store.path) == (100, 130)
    await check_all(store, store.path, rng)


async def test_a_server_on_a_file_without_counts_starts_at_once_and_its_folder_builds_them(make_client, monkeypatch):
    from tests.web.test_auth import bearer, secret

    monkeypatch.setattr(counts, "FOLD_ROWS", 10)  # so that 120 waiting decisions are a backlog
    monkeypatch.setattr(counts, "PAIR_BATCH", 10)
    client = await make_client("sqlite", counts_fold_rows=50, counts_fold_interval_s=60.0)
    runtime = client.app[RUNTIME_KEY]
    admin = await secret(client, ["admin"])
    rng = random.Random(17)
    store = client.app[STORE_KEY]
    with sqlite3.connect(store.path) as db:
        # As a file upgraded to 013 and 017 looks: decisions, no counts yet.
        for n in range(120):
            cavra_insert(db, f"cavra-{n:03d}", **without_id(record(rng, n)))
    steps = []
    step = runtime.folder.step
    monkeypatch.setattr(runtime.folder, "step", lambda rows: steps.append(rows) or step(rows))
    await runtime.folder.catch_up()  # the loop's first look was before the rows: the same steps, awaited
    assert steps == [50, 50, 50]  # to 50, 100, 120 decisions
    assert state(store.path) == (120, 120) and runtime.folder.upto == 120
    health = await (await client.get("/healthz")).json()
    assert health["counts"] == {"lag_rows": 0, "lag_s": 0.0, "counted_upto": 120}
    await check_all(store, store.path, rng)
    facets = await (await client.get("/decisions/facets", headers=bearer(admin))).json()
    assert facets["total"] == 120


@pytest.mark.slow
async def test_open_leaves_a_backlog_to_the_folder_and_reads_stay_exact(tmp_path, monkeypatch):
    monkeypatch.setattr(counts, "FOLD_ROWS", 10)
    rng = random.Random(19)
    first = SqliteStore(tmp_path / "o.db")
    await first.open()
    await first.write([accepted(record(rng, n)) for n in range(120)])
    await first.close()
    with sqlite3.connect(tmp_path / "o.db") as db:
        # As a file upgraded to 013 looks: decisions, no counts yet.
        db.execute("DELETE FROM activity_decision_counts")
        db.execute("UPDATE activity_decision_counts_state SET counted_rowid = 0, paired_rowid = 0")
    again = SqliteStore(tmp_path / "o.db")
    await again.open()
    try:
        assert state(again.path) == (0, 120)  # open does not wait for a fold
        await check_all(again, again.path, rng)
        assert (await again.fold_counts(1000))[0] == 0
        assert state(again.path) == (120, 120)
        await check_all(again, again.path, rng)
    finally:
        await again.close()


async def test_filters_the_counts_lack_are_scanned(store):
    rng = random.Random(19)
    await store.write([accepted(record(rng, n)) for n in range(100)])
    query = ListQuery(equals=(("agent_id", ("agent-1",)), ("severity", ("high",))))
    assert countplan.servable(query, facets=False) is None
    assert countplan.servable(query, facets=True) is None
    assert countplan.servable(ListQuery(equals=(("repository", ("acme/a",)),)), facets=True) is None
    assert countplan.servable(ListQuery(equals=(("rule_id", ("rule.1",)),)), facets=True) is None
    # A workspace within a window: its pair rows are all-time rows.
    assert countplan.servable(ListQuery(equals=(("workspace_id", ("ws-1",)),), since=moment(1)), facets=True) is None
    two = ListQuery(equals=(("severity", ("high",)), ("policy_pack", ("strict",))))
    assert countplan.servable(two, facets=True) is None
    assert (await store.list_decisions(query)).total == scanned_total(store.path, query)


def test_a_window_is_split_into_whole_days_and_partial_days():
    p = countplan.plan("2026-03-01T10:30:00.000000+00:00", "2026-03-04T02:00:00.000000+00:00")
    # 13.5 hours of March 1st: the whole day, less its first 10.5 hours; 2 hours of March 4th: scanned.
    assert p.buckets == [(10, "2026-03-01", "2026-03-04")]
    assert p.scans == [
        ("2026-03-01T00:00:00.000000+00:00", "2026-03-01T10:30:00.000000+00:00", -1),
        ("2026-03-04T00:00:00.000000+00:00", "2026-03-04T02:00:00.000000+00:00", 1),
    ]
    assert countplan.plan(None, None).buckets == [(0, None, None)]
    short = countplan.plan("2026-03-01T10:05:00.000000+00:00", "2026-03-02T10:00:00.000000+00:00")
    assert short.buckets == [(10, "2026-03-01", "2026-03-02")] and [sign for *_, sign in short.scans] == [-1, 1]
    narrow = countplan.plan("2026-03-01T20:00:00.000000+00:00", "2026-03-02T03:00:00.000000+00:00")
    assert narrow.buckets == [] and [sign for *_, sign in narrow.scans] == [1, 1]
    # No edge scans more than half a day, however the window falls.
    late = countplan.plan("2026-03-01T23:00:00.000000+00:00", "2026-03-02T23:00:00.000000+00:00")
    assert late.buckets == [(10, "2026-03-02", "2026-03-03")]
    assert late.scans == [
        ("2026-03-01T23:00:00.000000+00:00", "2026-03-02T00:00:00.000000+00:00", 1),
        ("2026-03-02T23:00:00.000000+00:00", "2026-03-03T00:00:00.000000+00:00", -1),
    ]
    inside = countplan.plan("2026-03-01T01:00:00.000000+00:00", "2026-03-01T23:00:00.000000+00:00")
    assert inside.buckets == [(10, "2026-03-01", "2026-03-02")] and len(inside.scans) == 2
    assert countplan.plan("2026-03-01T01:00:00Z", "2026-03-01T02:00:00Z").buckets == []
    open_end = countplan.plan("2026-03-01T00:00:00.000000+00:00", None)
    assert open_end == countplan.Plan([(10, "2026-03-01", None)], [])
    # Another offset names the same instant: the day is UTC's.
    assert countplan.plan("2026-03-01T02:00:00+02:00", "2026-03-03T00:00:00Z").buckets == [
        (10, "2026-03-01", "2026-03-03")
    ]


def test_rebuild_recounts_after_a_replace_that_fired_no_trigger(tmp_path):
    path = tmp_path / "r.db"
    from cavra_ingest.store.migrate import apply_migrations

    apply_migrations(path)
    db = sqlite3.connect(path, isolation_level=None)
    insert = (
        "INSERT OR REPLACE INTO activity_decisions (decision_id, session_id, agent_id, actor, policy_pack,"
        " action_type, rule_id, decision, severity, timestamp, payload)"
        " VALUES ('x', 's', 'a', 'ai', 'p', 'w', 'r', ?, 'low', '2026-03-01T00:00:00.000000+00:00', '{}')"
    )
    db.execute(insert, ("allow",))
    counts.catch_up(db)
    db.execute(insert, ("block",))  # REPLACE deletes without firing delete triggers
    counts.rebuild(db)
    rows = db.execute(
        "SELECT decision, n FROM activity_decision_counts WHERE span = 0 AND field = 'severity' AND tenant = '*'"
    )
    assert dict(rows.fetchall()) == {"block": 1, counts.ANY_OUTCOME: 1}
    db.close()


async def test_a_window_query_reads_only_its_buckets(store):
    # The counts' primary key (span, bucket, ...) bounds each part of a window: no scan of the whole table.
    query = dataclasses.replace(ListQuery(), since=moment(3.5), until=moment(60))
    sql, params = countreads.total_statements(query, "", 0)[0]
    with sqlite3.connect(store.path) as db:
        steps = [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql, params)]
    assert all("SCAN" not in step for step in steps), steps


def test_recount_command_rebuilds_the_decision_counts(tmp_path):
    from cavra_ingest.store.migrate import apply_migrations
    from cavra_ingest.store.recount import recount_sqlite

    path = tmp_path / "rc.db"
    apply_migrations(path)
    with sqlite3.connect(path) as db:
        cavra_insert(db, "x")
        db.execute("UPDATE activity_decision_counts_state SET counted_rowid = 1")  # counted, yet no counts
    recount_sqlite(path)
    with sqlite3.connect(path) as db:
        assert db.execute(counts.STATE).fetchone() == (1, 1)
        rows = db.execute("SELECT span, tenant, n FROM activity_decision_counts WHERE field = 'severity'")
        # Per outcome and summed over the outcomes, per tenant and under any tenant; and its day.
        assert sorted(rows.fetchall()) == [(0, "", 1), (0, "", 1), (0, "*", 1), (0, "*", 1), (10, "", 1)]


def scanned_histogram(path: Path, query: ListQuery) -> list[tuple[str, str, int]]:
    """The day histogram without counts: the listing's own statement over the rows."""
    sql, params = DECISIONS.histogram(query, dimensions.DAY)
    with sqlite3.connect(path) as db:
        return sorted(db.execute(sql, params).fetchall())


async def test_day_histograms_from_the_counts_equal_a_scan(store):
    rng = random.Random(23)
    for start in range(0, 400, 50):
        await store.write([accepted(record(rng, n)) for n in range(start, start + 50)])
    with sqlite3.connect(store.path) as db:
        # Behind the writer's back: counted only by the reads' own scan of rows above the watermark.
        cavra_insert(db, "cavra-h", decision="block", timestamp="2026-03-02T23:59:59Z", tenant_id="acme")
        db.execute("DELETE FROM activity_decisions WHERE decision_id >= 'd-00390' AND decision_id < 'd-00400'")
    assert state(store.path) == (400, 401)
    served = [q for q in queries(rng) if countplan.servable(q, facets=True) is not None]
    assert len(served) > 40
    for query in served:
        assert sorted(await store.histogram(query, dimensions.DAY)) == scanned_histogram(store.path, query), query
        if query.since is None and query.until is None:
            sql, params = DECISIONS.bounds(query)
            with sqlite3.connect(store.path) as db:
                assert await store.time_bounds(query) == db.execute(sql, params).fetchone(), query


async def test_the_histogram_endpoint_answers_whole_days_from_the_counts(make_client, monkeypatch):
    from tests.web.test_auth import bearer, secret

    client = await make_client("sqlite", auth_cache_s=60.0)
    admin = await secret(client, ["admin"])
    acme = await secret(client, ["read"], "acme")
    rng = random.Random(29)
    response = await client.post("/decisions", json=[record(rng, n) for n in range(300)], headers=bearer(admin))
    assert response.status == 200, await response.text()
    store = client.app[STORE_KEY]
    with sqlite3.connect(store.path) as db:
        cavra_insert(db, "cavra-h", decision="warn", timestamp="2026-03-03T12:00:00Z", tenant_id="acme")
    calls: list[ListQuery] = []
    statements = countreads.histogram_statements
    monkeypatch.setattr(
        countreads, "histogram_statements", lambda query, counted: calls.append(query) or statements(query, counted)
    )
    cases = [
        ("interval=1d", admin, True),
        ("interval=7d&decision=block&decision=warn", admin, True),
        ("interval=1d&tenant_id=globex&since=2026-03-01T06:30:00Z&until=2026-03-03T20:00:00Z", admin, True),
        ("interval=1d&decision=allow", acme, True),  # the token's tenant is forced: still keyed
        ("interval=1d&repository=acme/a", admin, False),  # a field the counts are not keyed by
        ("interval=1d&q=rule.1", admin, False),
        ("interval=6h", admin, False),
        ("decision=block", admin, False),  # auto over 3 days: 3h buckets, scanned; the bounds from the counts
    ]
    for url, token, from_counts in cases:
        calls.clear()
        got = await (await client.get(f"/decisions/histogram?{url}", headers=bearer(token))).json()
        assert bool(calls) == from_counts, url
        with monkeypatch.context() as m:
            m.setattr(countplan, "servable", lambda *args, **kwargs: None)  # the scan path, for the truth
            want = await (await client.get(f"/decisions/histogram?{url}", headers=bearer(token))).json()
        assert got == want and got["total"] > 0, url
    # The forced tenant: the acme token sees what the administrator sees filtered to acme.
    mine = await (await client.get("/decisions/histogram?interval=1d", headers=bearer(acme))).json()
    theirs = await (await client.get("/decisions/histogram?interval=1d&tenant_id=acme", headers=bearer(admin))).json()
    everyone = await (await client.get("/decisions/histogram?interval=1d", headers=bearer(admin))).json()
    assert mine == theirs and 0 < mine["total"] < everyone["total"]


async def test_a_day_histogram_reads_only_its_count_rows(store):
    query = ListQuery(equals=(("decision", ("block",)),), since=moment(3.5), until=moment(60))
    sql, params = countreads.histogram_statements(query, 0)[0]
    with sqlite3.connect(store.path) as db:
        steps = [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql, params)]
    assert any("activity_decision_counts" in step for step in steps)
    assert all("SCAN" not in step for step in steps), steps


def test_auto_prefers_whole_days_from_two_weeks():
    from cavra_ingest.http.routes.histogram import auto_interval

    start = START
    assert auto_interval(start, start + timedelta(days=13, hours=23)) == ("6h", 6 * 3600)
    assert auto_interval(start, start + timedelta(days=14)) == ("1d", 86400)
    assert auto_interval(start, start + timedelta(days=59)) == ("1d", 86400)
    assert auto_interval(start, start + timedelta(days=61)) == ("7d", 7 * 86400)
    assert auto_interval(start, start + timedelta(days=2)) == ("1h", 3600)


@pytest.mark.slow
async def test_rowids_freed_by_deleting_the_newest_counted_rows_are_counted_when_reused(store):
    """SQLite gives a new row max(rowid) + 1: deleting the newest counted rows hands their rowids out again,
    below the watermark. The delete lowers the watermark with them, so the reused rowids are counted."""
    rng = random.Random(17)
    await store.write([accepted(record(rng, n)) for n in range(300)])
    assert state(store.path) == (300, 300)
    with sqlite3.connect(store.path) as db:
        db.execute("DELETE FROM activity_decisions WHERE rowid > 250")  # CAVRA, or a prune of backfilled rows
    assert state(store.path) == (250, 250)
    await store.write([accepted(record(rng, n)) for n in range(1000, 1040)])
    with sqlite3.connect(store.path) as db:
        # And CAVRA inserting into freed rowids itself, after deleting again below the watermark.
        db.execute("DELETE FROM activity_decisions WHERE rowid > 280")
        cavra_insert(
            db,
            "cavra-2",
            session_id="s-1",
            agent_id="agent-9",
            repository="acme/a",
            policy_pack="baseline",
            action_type="write_file",
            target="",
            rule_id="rule.9",
            decision="block",
            severity="high",
            timestamp="2026-03-02T10:30:00Z",
            correlation_id=None,
            tenant_id="acme",
        )
    assert state(store.path) == (280, 281)
    await check_all(store, store.path, rng)


def grouped_facets(path: Path, query: ListQuery, top: int) -> Facets:
    """Plain SQL: the matching rows, one GROUP BY per facet field, nothing of the store's."""
    clauses = [f"{name} IN ({', '.join('?' * len(values))})" for name, values in query.equals]
    params = [v for _, values in query.equals for v in values]
    for clause, edge in (("timestamp >= ?", query.since), ("timestamp < ?", query.until)):
        if edge is not None:
            clauses.append(clause)
            params.append(edge)
    where = " AND ".join(clauses) or "1"
    rows = []
    with sqlite3.connect(path) as db:
        for name in FACET_FIELDS:
            sql = f"SELECT {name}, count(*) FROM activity_decisions WHERE {where} GROUP BY {name}"
            rows += [(name, value, n) for value, n in db.execute(sql, params)]
    return facets_from_rows(rows, top)


@pytest.mark.slow
async def test_facets_for_each_single_filter_equal_a_group_by(store):
    """Every filter field the console offers, fast path or index path, against GROUP BY on the file,
    also with rows another program wrote straight into it (counted at read time, then folded in)."""
    rng = random.Random(23)
    await store.write([accepted(record(rng, n)) for n in range(400)])
    with sqlite3.connect(store.path) as db:
        from cavra_ingest.store.sql import INSERT_DECISION, decision_row

        db.executemany(INSERT_DECISION, [decision_row(accepted(record(rng, n))) for n in range(400, 430)])
        cavra_insert(db, "cavra-2", session_id="s-acme-1", agent_id="agent-1", policy_pack="strict", **ODD_CAVRA_ROW)
    assert state(store.path) == (400, 431)
    singles = {
        "session_id": "s-acme-1",
        "agent_id": "agent-1",
        "repository": "acme/b",
        "policy_pack": "strict",
        "decision": "block",
        "severity": "informational",
        "action_type": "write_file",
        "tenant_id": "acme",
        "workspace_id": "ws-1",
        "rule_id": "rule.9",
    }
    for rounds in range(2):
        for name, value in singles.items():
            query = ListQuery(equals=((name, (value,)),))
            fast = countplan.servable(query, facets=True) is not None
            assert fast == (name in {*dimensions.PAIRED, *dimensions.KEYED}), name
            for top in (10, 1):
                assert await store.facets(query, top) == grouped_facets(store.path, query, top), (name, top)
        # The next batch folds the rows written behind the writer's back into the counts.
        await store.write([accepted(record(rng, 1000 + rounds))])
    assert state(store.path) == (433, 433)


def test_pair_rows_count_each_facet_field_per_paired_value(tmp_path):
    from cavra_ingest.store.migrate import apply_migrations

    path = tmp_path / "p.db"
    apply_migrations(path)
    db = sqlite3.connect(path, isolation_level=None)
    cavra_insert(db, "x", repository="r", rule_id="ru", workspace_id="ws")
    counts.catch_up(db)
    fields = {row[0] for row in db.execute("SELECT field FROM activity_decision_counts WHERE span = 0")}
    # Each facet field per value of each paired field, but not per its own value; the plain rows stay.
    assert {"repository|severity=low", "agent_id|action_type=w", "severity|action_type=w", "action_type"} <= fields
    assert {"repository|policy_pack=p", "policy_pack|severity=low", "agent_id|workspace_id=ws"} <= fields
    assert "severity|severity=low" not in fields and not any(f.startswith("rule_id|") for f in fields)
    # Not per rule (their pair rows would outnumber the decisions), nor per repository or agent.
    assert not any("|rule_id=" in f or "|repository=" in f or "|agent_id=" in f for f in fields)
    # Pair rows for all time only, and for a decision without a tenant only under any tenant ('*': no
    # filter asks for a NULL tenant); a day holds the plain fields' rows alone.
    per_span = dict(db.execute("SELECT span, count(*) FROM activity_decision_counts GROUP BY span").fetchall())
    # All time: 7 fields per outcome and 5 summed over the outcomes, each per tenant and under any tenant;
    # the pair rows under any tenant.
    assert per_span == {10: 7, 0: 2 * 7 + 2 * 5 + 3 * 4 + 5}
    tenants = {row[0] for row in db.execute("SELECT tenant FROM activity_decision_counts WHERE field LIKE '%|%'")}
    assert tenants == {"*"}
    db.close()


async def test_facets_of_windows_at_any_edges_equal_a_group_by(store):
    """Noon to noon (two half days scanned, a field per statement on two readers), other edges, with the
    rows another program wrote and deleted straight in the file."""
    rng = random.Random(31)
    await store.write([accepted(record(rng, n)) for n in range(500)])
    with sqlite3.connect(store.path) as db:
        cavra_insert(db, "cavra-1", **ODD_CAVRA_ROW)  # NULL repository, counted at read time
        cavra_insert(db, "cavra-2", **{**ODD_CAVRA_ROW, "timestamp": "2026-03-02T06:00:00Z"})
        db.execute("DELETE FROM activity_decisions WHERE decision_id IN ('d-00007', 'd-00100', 'd-00333')")
    await store.write([accepted(record(rng, 500))])  # folds the two in
    with sqlite3.connect(store.path) as db:
        cavra_insert(db, "cavra-3", **{**ODD_CAVRA_ROW, "timestamp": "2026-03-02T11:00:00Z"})  # not counted yet
    windows = [(12, 36), (12, 60), (6, 30), (30, 42), (0.5, 71.5), (36, 37)]
    for lo, hi in windows:
        query = ListQuery(since=moment(lo), until=moment(hi))
        assert countplan.servable(query, facets=True) == ""
        for top in (10, 1):
            assert await store.facets(query, top) == grouped_facets(store.path, query, top), (lo, hi, top)
    for name, values in (("workspace_id", ("ws-2",)), ("workspace_id", ("ws-1", "ws-2")), ("rule_id", ("rule.9",))):
        query = ListQuery(equals=((name, values),))
        assert countplan.servable(query, facets=True) == (name if name in dimensions.PAIRED else None)
        assert await store.facets(query, 10) == grouped_facets(store.path, query, 10), name


async def shared_then_alone(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch, query: ListQuery, delete: str, params: tuple[Any, ...]
) -> tuple[list[bool], Facets]:
    """Facets of `query` on two readers, then with `delete` committed between the two readers' snapshots: one
    reader answers alone, from the first snapshot. Returns each snapshot check's verdict and the facets after."""
    shared: list[bool] = []
    same_snapshot = store.readers.same_snapshot

    async def spied(other: Any, version: Any) -> bool:
        shared.append(await same_snapshot(other, version))
        return shared[-1]

    monkeypatch.setattr(store.readers, "same_snapshot", spied)
    before = grouped_facets(store.path, query, 10)
    assert await store.facets(query, 10) == before
    assert shared == [True]

    async def delete_between() -> None:
        with sqlite3.connect(store.path) as db:
            assert db.execute(delete, params).rowcount > 5

    monkeypatch.setattr(store.readers, "between_snapshots", delete_between)
    assert await store.facets(query, 10) == before
    assert shared == [True, False]
    monkeypatch.setattr(store.readers, "between_snapshots", lambda: asyncio.sleep(0))
    after = grouped_facets(store.path, query, 10)
    assert after != before
    assert await store.facets(query, 10) == after
    return shared, after


async def test_two_readers_share_one_snapshot_or_one_reads_alone(store, monkeypatch):
    """A window's partial days are faceted on two readers at once only when both see the same snapshot: a
    delete committed between their snapshots makes one reader answer alone, from the first snapshot."""
    rng = random.Random(37)
    await store.write([accepted(record(rng, n)) for n in range(600)])
    noon_to_noon = ListQuery(since=moment(12), until=moment(36))
    # Only partial days of 6 hours or more, with no filter, are worth a second reader.
    assert countreads.long_edges(noon_to_noon)
    assert not countreads.long_edges(ListQuery(since=moment(1), until=moment(2)))
    assert not countreads.long_edges(dataclasses.replace(noon_to_noon, equals=(("decision", ("block",)),)))
    delete = "DELETE FROM activity_decisions WHERE timestamp >= ? AND timestamp < ? AND decision = 'block'"
    await shared_then_alone(store, monkeypatch, noon_to_noon, delete, (moment(24), moment(36)))


async def test_facets_read_from_the_table_share_one_snapshot_on_two_readers_or_one_reads_alone(store, monkeypatch):
    """A filter no count answers (a rule) groups its matches on two heavy readers at once when one is idle and
    both see the same snapshot; a commit between the snapshots, or no idle reader, leaves one reader alone."""
    rng = random.Random(43)
    await store.write([accepted(record(rng, n)) for n in range(600)])
    query = ListQuery(equals=(("rule_id", ("rule.1", "rule.2", "rule.9")),))
    assert countplan.servable(query, facets=True) is None
    delete = "DELETE FROM activity_decisions WHERE rule_id IN (?, ?) AND decision = 'block'"
    shared, after = await shared_then_alone(store, monkeypatch, query, delete, ("rule.1", "rule.2"))
    assert shared == [True, False, True]
    # With every other heavy reader busy, the one reader answers alone (nothing waits for a second).
    async with store.readers.heavy():
        assert await store.facets(query, 10) == after
    assert shared == [True, False, True]


def sums_over_outcomes(path: Path) -> tuple[list[tuple[str, str, str, int]], list[tuple[str, str, str, int]]]:
    """The all-time sums over the outcomes (019) and what a plain GROUP BY of the file says they should be."""
    with sqlite3.connect(path) as db:
        kept = db.execute(
            "SELECT field, tenant, value, n FROM activity_decision_counts"
            " WHERE span = 0 AND decision = '*' AND n != 0 ORDER BY 1, 2, 3"
        ).fetchall()
        want = []
        for name in counts.ROLLED:
            for tenant in ("ifnull('=' || tenant_id, '')", "'*'"):
                want += db.execute(
                    f"SELECT '{name}', {tenant}, ifnull('=' || {name}, ''), count(*) FROM activity_decisions"
                    " GROUP BY 2, 3"
                ).fetchall()
    return kept, sorted(want)


async def check_unfiltered(store: SqliteStore) -> None:
    """Facets without an outcome filter (from the sums) and totals equal a GROUP BY over the file."""
    for query in (ListQuery(), ListQuery(equals=(("tenant_id", ("acme",)),))):
        query = ListQuery(equals=query.equals, with_total=True)
        for top in (100, 2, 1):
            assert await store.facets(query, top) == grouped_facets(store.path, query, top), (query, top)
        assert (await store.list_decisions(query)).total == scanned_total(store.path, query)
    counted, newest = state(store.path)
    if counted == newest:
        kept, want = sums_over_outcomes(store.path)
        assert kept == want
    # The outcome the sums are kept under, asked for literally, matches nothing.
    star = ListQuery(equals=(("decision", (counts.ANY_OUTCOME,)),), with_total=True)
    assert (await store.list_decisions(star)).total == 0
    assert (await store.facets(star, 10)).total == 0


@pytest.mark.slow
async def test_facets_without_an_outcome_filter_read_sums_that_stay_equal_to_a_group_by(store):
    """The sums over the outcomes through every way rows change: the writer, CAVRA inserting, overwriting and
    deleting straight in the file, prune, and a rebuild."""
    from cavra_ingest.store.prune import SqliteConnection, cutoff, prune

    rng = random.Random(31)
    await store.write([accepted(record(rng, n)) for n in range(300)])
    await check_unfiltered(store)
    with sqlite3.connect(store.path) as db:
        cavra_insert(db, "cavra-s", session_id="s-cavra", agent_id="agent-1", policy_pack="strict", **ODD_CAVRA_ROW)
    assert state(store.path) == (300, 301)
    await check_unfiltered(store)  # the sums, and CAVRA's row counted from the table: every value read
    await store.write([accepted(record(rng, 300))])  # folds CAVRA's row in with the batch
    assert state(store.path) == (302, 302)
    await check_unfiltered(store)
    with sqlite3.connect(store.path) as db:
        # Overwritten in place: another outcome, tenant and repository; then deleted.
        db.execute(
            "UPDATE activity_decisions SET decision = 'block', tenant_id = 'globex', repository = 'acme/b',"
            " timestamp = '2026-03-03T01:15:00+02:00' WHERE decision_id IN ('d-00004', 'd-00005', 'cavra-s')"
        )
    await check_unfiltered(store)
    with sqlite3.connect(store.path) as db:
        db.execute("DELETE FROM activity_decisions WHERE decision_id >= 'd-00200' AND decision_id < 'd-00230'")
    await check_unfiltered(store)
    conn = SqliteConnection(store.path, 5000)
    try:
        report = await prune(conn, cutoff("2026-03-02"))
    finally:
        await conn.close()
    assert report.decisions_removed > 50
    await check_unfiltered(store)
    with sqlite3.connect(store.path, isolation_level=None) as db:
        db.execute("UPDATE activity_decision_counts SET n = n + 5 WHERE decision = '*'")  # wrong, until rebuilt
        counts.rebuild(db)
    await check_unfiltered(store)


async def test_unfiltered_facets_read_the_top_values_of_the_sums_from_their_index(store):
    rng = random.Random(37)
    await store.write([accepted(record(rng, n)) for n in range(100)])
    with sqlite3.connect(store.path) as db:
        # Top ten (nothing waits for the counts), or all values (some rows wait above the watermark).
        for query, top in itertools.product((ListQuery(), ListQuery(equals=(("tenant_id", ("acme",)),))), (10, None)):
            statements = dict(zip(FACET_FIELDS, countreads.facet_counts(query, top), strict=True))
            for name in counts.ROLLED:
                sql, params = statements[name]
                steps = [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql, params)]
                # The field's sums in count order, the first ten entries for a top ten: no per-outcome row,
                # no sort.
                assert steps == [
                    "SEARCH activity_decision_counts USING COVERING INDEX idx_activity_decision_counts_summed"
                    " (field=? AND tenant=?)"
                ], (name, steps)
            # The decision facet is still the `severity` rows per outcome.
            sql, params = statements["decision"]
            assert ("'*'",) != params and "decision != '*'" in sql
        # With an outcome filter, the per-outcome rows.
        sql, params = countreads.facet_counts(ListQuery(equals=(("decision", ("block",)),)), 10)[2]
        steps = [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql, params)]
        assert any("USING PRIMARY KEY" in step for step in steps), steps
    total_sql, total_params = countreads.total_statements(ListQuery(), "", 100)[0]
    assert "decision = '*'" in total_sql  # totals without an outcome filter read the sums too


async def test_migration_019_sums_the_counts_a_file_already_has(tmp_path, monkeypatch):
    import shutil

    from cavra_ingest.store.migrate import apply_migrations, migrations_dir

    older = tmp_path / "018"
    older.mkdir()
    for migration in sorted(migrations_dir().glob("*.sql")):
        if migration.name < "019":
            shutil.copy(migration, older)
    path = tmp_path / "m.db"
    apply_migrations(path, older)
    rng = random.Random(41)
    with sqlite3.connect(path, isolation_level=None) as db:
        from cavra_ingest.store.sql import INSERT_DECISION, decision_row

        db.executemany(INSERT_DECISION, [decision_row(accepted(record(rng, n))) for n in range(200)])
        # Counted as 018 counted them: no sums over the outcomes.
        monkeypatch.setattr(counts, "ADD_DELTA", (*counts.ADD_DELTA[:3], counts.ADD_DELTA[-1]))
        counts.catch_up(db)
        cavra_insert(db, "cavra-m", tenant_id="acme")  # above the watermark: folded later, with its sums
        assert db.execute("SELECT count(*) FROM activity_decision_counts WHERE decision = '*'").fetchone() == (0,)
    monkeypatch.undo()
    assert apply_migrations(path)[0] == "019_counts_summed_over_outcomes.sql"  # and those after it
    with sqlite3.connect(path) as db:
        # Above the watermark (no trigger moves a count): the sums are those of the 200 counted decisions.
        db.execute("DELETE FROM activity_decisions WHERE decision_id = 'cavra-m'")
    kept, want = sums_over_outcomes(path)
    assert kept == want and kept
    s = SqliteStore(path)
    await s.open()
    try:
        with sqlite3.connect(path) as db:
            cavra_insert(db, "cavra-m", tenant_id="acme")
        await check_unfiltered(s)  # the uncounted row read from the table
        with sqlite3.connect(path, isolation_level=None) as db:
            counts.catch_up(db)  # folded with its sums, as the writer folds any backlog
        assert state(path) == (201, 201)
        await check_unfiltered(s)
    finally:
        await s.close()
