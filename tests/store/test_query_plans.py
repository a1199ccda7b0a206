"""The representative queries use the indexes built for them: an index cannot quietly stop being used."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from cavra_ingest.store.base import FACET_FIELDS, ListQuery
from cavra_ingest.store.migrate import apply_migrations
from cavra_ingest.store.sql import Listing
from cavra_ingest.store.sqlite.listings import DECISIONS, SESSIONS

SINCE, UNTIL = "2026-03-01T00:00:00.000000+00:00", "2026-03-02T00:00:00.000000+00:00"
AFTER = ("2026-03-01T10:00:00.000000+00:00", "dec-1")


def q(**equals: str | tuple[str, ...]) -> ListQuery:
    return ListQuery(equals=tuple((k, v if isinstance(v, tuple) else (v,)) for k, v in equals.items()))


# (name, listing, query, index that must drive the page)
LISTINGS = [
    ("newest first", DECISIONS, ListQuery(), "idx_activity_decisions_timestamp"),
    ("time range", DECISIONS, ListQuery(since=SINCE, until=UNTIL), "idx_activity_decisions_timestamp"),
    ("keyset page", DECISIONS, ListQuery(after=AFTER), "idx_activity_decisions_timestamp"),
    ("one agent", DECISIONS, q(agent_id="a"), "idx_activity_decisions_agent"),
    ("agent + outcome", DECISIONS, q(agent_id="a", decision="block"), "idx_activity_decisions_agent"),
    ("outcome + agent", DECISIONS, q(decision="block", agent_id="a"), "idx_activity_decisions_agent"),
    (
        "agent + outcome, keyset",
        DECISIONS,
        ListQuery(equals=(("agent_id", ("a",)), ("decision", ("block",))), after=AFTER),
        "idx_activity_decisions_agent",
    ),
    ("repository + severity", DECISIONS, q(repository="r", severity="high"), "idx_activity_decisions_repository"),
    ("one outcome", DECISIONS, q(decision="block"), "idx_activity_decisions_timestamp"),
    ("two outcomes", DECISIONS, q(decision=("block", "require_approval")), "idx_activity_decisions_timestamp"),
    ("policy pack", DECISIONS, q(policy_pack="p"), "idx_activity_decisions_timestamp"),
    ("tenant + outcome", DECISIONS, q(tenant_id="t", decision="block"), "idx_activity_decisions_timestamp"),
    ("sessions newest first", SESSIONS, ListQuery(), "idx_activity_sessions_updated"),
]


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> sqlite3.Connection:
    path = Path(tmp_path_factory.mktemp("plans")) / "plans.db"
    apply_migrations(path)
    return sqlite3.connect(path)


def plan(db: sqlite3.Connection, sql: str, params: list[object]) -> list[str]:
    return [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql, params)]


@pytest.mark.parametrize(("name", "listing", "query", "index"), LISTINGS, ids=[row[0] for row in LISTINGS])
def test_listing_reads_its_index_in_order(db, name, listing: Listing, query, index):
    steps = plan(db, *listing.select(query))
    assert any(f"INDEX {index}" in step for step in steps), steps
    # The page is read in order and stops at `limit`: no sort of every match.
    assert not any("TEMP B-TREE" in step for step in steps), steps


def test_correlation_lookup_uses_its_index(db):
    # A correlation id names a handful of rows: sorting those is fine, scanning the table is not.
    steps = plan(db, *DECISIONS.select(q(correlation_id="c", decision="block")))
    assert steps[0] == "SEARCH activity_decisions USING INDEX idx_activity_decisions_correlation (correlation_id=?)"


def test_timeline_reads_the_session_index_oldest_first(db):
    query = ListQuery(equals=(("session_id", ("s",)),), oldest_first=True, after=AFTER)
    steps = plan(db, *DECISIONS.select(query))
    assert steps == [
        "SEARCH activity_decisions USING INDEX idx_activity_decisions_session (session_id=? AND timestamp>?)"
    ]


@pytest.mark.parametrize(
    ("query", "index"),
    [
        (q(decision="block"), "COVERING INDEX idx_activity_decisions_decision"),
        (q(decision=("block", "warn")), "COVERING INDEX idx_activity_decisions_decision"),
        # 004's agent index or 006's: both hold the agent's rows together.
        (q(agent_id="a"), "COVERING INDEX idx_activity_decisions_agent"),
        (q(agent_id="a", decision="block"), "INDEX idx_activity_decisions_agent"),
        (ListQuery(since=SINCE), "COVERING INDEX idx_activity_decisions_timestamp"),
        (ListQuery(equals=(("decision", ("block",)),), since=SINCE), "COVERING INDEX idx_activity_decisions_timestamp"),
        (q(decision="block", severity="critical"), "COVERING INDEX idx_activity_decisions_timestamp"),
    ],
)
def test_counts_use_the_narrowest_index(db, query, index):
    steps = plan(db, *DECISIONS.count(query))
    assert any(index in step for step in steps), steps


def test_plans_hold_with_statistics(tmp_path):
    # ANALYZE on a skewed table must not lure SQLite back to a single-column index plus a sort.
    path = tmp_path / "stats.db"
    apply_migrations(path)
    db = sqlite3.connect(path)
    rows = [
        (
            f"d{n:05d}",
            f"s{n % 50}",
            f"a{n % 40}",
            "ai",
            f"r{n % 30}",
            "p",
            "x",
            "",
            "rule",
            ("allow", "block")[n % 9 == 0],
        )
        + ("low", f"2026-03-01T{n // 3600 % 24:02d}:{n // 60 % 60:02d}:{n % 60:02d}.000000+00:00", f"c{n}", "{}")
        for n in range(5000)
    ]
    db.executemany(
        "INSERT INTO activity_decisions (decision_id, session_id, agent_id, actor, repository, policy_pack,"
        " action_type, target, rule_id, decision, severity, timestamp, correlation_id, payload)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    db.execute("ANALYZE")
    for name, listing, query, index in LISTINGS:
        steps = plan(db, *listing.select(query))
        assert any(f"INDEX {index}" in step for step in steps), (name, steps)
        assert not any("TEMP B-TREE" in step for step in steps), (name, steps)


def test_contract_indexes_of_004_are_kept_by_cavras_names(db):
    names = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    # SPEC §5: CAVRA's 004 names, so CAVRA's store opening this file adds no duplicates.
    for suffix in ("session", "agent", "repository", "policy", "decision", "timestamp"):
        assert f"idx_activity_decisions_{suffix}" in names
    for suffix in ("agent", "repository", "policy", "updated"):
        assert f"idx_activity_sessions_{suffix}" in names
    assert "idx_activity_sessions_state" in names


@pytest.mark.parametrize(
    ("query", "index"),
    [
        (q(decision="block"), "COVERING INDEX idx_activity_decisions_timestamp"),
        (
            ListQuery(since=SINCE, until=UNTIL),
            "COVERING INDEX idx_activity_decisions_timestamp (timestamp>? AND timestamp<?)",
        ),
        (q(tenant_id="t", severity="high"), "COVERING INDEX idx_activity_decisions_timestamp"),
        (q(agent_id="a", decision="block"), "INDEX idx_activity_decisions_agent"),  # 004 or 006: no order needed
        (q(session_id="s"), "INDEX idx_activity_decisions_session"),
    ],
)
def test_facets_read_matches_once_through_the_driving_index(db, query, index):
    steps = [step for step in plan(db, *DECISIONS.facets(query, FACET_FIELDS)) if "activity_decisions" in step]
    # One read of the matches (then grouped in memory), never a walk of some field's own index.
    assert len(steps) == 1 and index in steps[0], steps


# Rule filters: 025's index (rule, time, the facet and scope fields) drives facets, counts, the histogram and
# the time bounds, a window as a range of it, so a rule's are read from its entries alone (not the 5 M of the
# time index, nor the table).
RULE_QUERIES = [
    ("one rule", q(rule_id="r")),
    ("two rules", q(rule_id=("r", "s"))),
    ("rule + tenant", q(tenant_id="t", rule_id="r")),
    ("rule + outcome", q(rule_id="r", decision="block")),
    ("rule + workspace", q(rule_id="r", workspace_id="w")),
    ("rule in a window", ListQuery(equals=(("rule_id", ("r",)),), since=SINCE, until=UNTIL)),
    (
        "tenant + outcome + rule since",
        ListQuery(equals=(("tenant_id", ("t",)), ("decision", ("block", "warn")), ("rule_id", ("r",))), since=SINCE),
    ),
]
RULE_STATEMENTS = {
    "facets": lambda query: DECISIONS.facets(query, FACET_FIELDS),
    "count": DECISIONS.count,
    "histogram": lambda query: DECISIONS.histogram(query, 10),
    "bounds": DECISIONS.bounds,
}


def assert_reads_the_rule_index(steps: list[str], query: ListQuery) -> None:
    reads = [step for step in steps if "activity_decisions" in step]
    assert reads, steps
    for step in reads:
        assert "COVERING INDEX idx_activity_decisions_rule (rule_id=?" in step, steps
    if query.since is not None:
        assert "timestamp>?" in reads[0], steps  # the window bounds the range sought, not a test per entry


@pytest.mark.parametrize("use", list(RULE_STATEMENTS))
@pytest.mark.parametrize(("name", "query"), RULE_QUERIES, ids=[row[0] for row in RULE_QUERIES])
def test_rule_filters_read_the_rule_index(db, name, query, use):
    assert_reads_the_rule_index(plan(db, *RULE_STATEMENTS[use](query)), query)


def test_a_rule_page_still_reads_the_time_index_in_order(db):
    # The rule index lacks decision_id: a page would sort the rule's matches; the time index fills it in ~1 ms.
    steps = plan(db, *DECISIONS.select(q(rule_id="r")))
    assert steps == ["SCAN activity_decisions USING INDEX idx_activity_decisions_timestamp"]


def test_rule_plans_hold_and_other_plans_keep_their_index_with_statistics(tmp_path):
    # ANALYZE where one rule holds nearly every decision (CAVRA's default `runtime.default`): rule filters still
    # read the rule index, and no other query is lured to it (a skip-scan of its few rules, say).
    path = tmp_path / "rules.db"
    apply_migrations(path)
    db = sqlite3.connect(path)
    rows = [
        (f"d{n:05d}", f"s{n % 50}", f"a{n % 40}", "ai", f"r{n % 30}", "p", "x", "")
        + ("r" if n % 100 else "s", ("allow", "block")[n % 9 == 0], "low")
        + (f"2026-03-01T{n // 3600 % 24:02d}:{n // 60 % 60:02d}:{n % 60:02d}.000000+00:00", f"c{n}", "{}")
        for n in range(5000)
    ]
    db.executemany(
        "INSERT INTO activity_decisions (decision_id, session_id, agent_id, actor, repository, policy_pack,"
        " action_type, target, rule_id, decision, severity, timestamp, correlation_id, payload)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    db.execute("ANALYZE")
    for _, query in RULE_QUERIES:
        for statement in RULE_STATEMENTS.values():
            assert_reads_the_rule_index(plan(db, *statement(query)), query)
    others = [query for _, _, query, _ in LISTINGS] + [ListQuery(since=SINCE, until=UNTIL), q(severity="low")]
    for query in others:
        for statement in (*RULE_STATEMENTS.values(), DECISIONS.select):
            steps = plan(db, *statement(query))
            assert not any("idx_activity_decisions_rule" in step for step in steps), (query, steps)
