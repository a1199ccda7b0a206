"""Rule filters read 025's rule index and stay exact: their facets, totals, histogram and time bounds through
the store equal plain SQL on the file, also over rows another program (CAVRA) wrote straight into it."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from cavra_ingest.store import dimensions
from cavra_ingest.store.base import FACET_FIELDS, ListQuery
from cavra_ingest.store.sqlite import countplan
from cavra_ingest.store.sqlite.listings import DECISIONS
from cavra_ingest.store.sqlite.store import SqliteStore
from tests.store.test_counts import ODD_CAVRA_ROW, accepted, cavra_insert, grouped_facets, moment, record


def plain(path: Path, query: ListQuery, select: str, group: str = "") -> list[tuple[object, ...]]:
    """The query's rows by SQL that names no index and nothing of the store's."""
    clauses = [f"{name} IN ({', '.join('?' * len(values))})" for name, values in query.equals]
    params: list[object] = [v for _, values in query.equals for v in values]
    for clause, edge in (("timestamp >= ?", query.since), ("timestamp < ?", query.until)):
        if edge is not None:
            clauses.append(clause)
            params.append(edge)
    sql = f"SELECT {select} FROM activity_decisions NOT INDEXED WHERE {' AND '.join(clauses)} {group}"
    with sqlite3.connect(path) as db:
        return sorted(db.execute(sql, params).fetchall())


RULE_QUERIES = [
    ListQuery(equals=(("rule_id", ("rule.1",)),)),
    ListQuery(equals=(("rule_id", ("rule.2", "rule.9", "none")),)),
    ListQuery(equals=(("tenant_id", ("acme",)), ("rule_id", ("rule.9",)))),
    ListQuery(equals=(("rule_id", ("rule.0", "rule.3")), ("decision", ("block", "warn")))),
    ListQuery(equals=(("rule_id", ("rule.9",)), ("workspace_id", ("ws-1",)))),
    ListQuery(equals=(("rule_id", ("rule.1",)),), since=moment(7.5), until=moment(50.25)),
    ListQuery(equals=(("tenant_id", ("globex",)), ("rule_id", ("rule.2",)), ("severity", ("high",))), since=moment(30)),
    # A rule no decision has, and a window around CAVRA's own rows only.
    ListQuery(equals=(("rule_id", ("rule.404",)),)),
    ListQuery(equals=(("rule_id", ("rule.9",)),), since=moment(34), until=moment(36)),
]


@pytest.mark.slow
async def test_rule_facets_totals_histogram_and_bounds_equal_plain_sql(tmp_path: Path):
    rng = random.Random(41)
    store = SqliteStore(tmp_path / "rules.db")
    await store.open()
    try:
        await store.write([accepted(record(rng, n)) for n in range(400)])
        with sqlite3.connect(store.path) as db:
            # CAVRA's rows: a `Z` time, NULL repository, a severity outside the enum, a rule of their own.
            cavra_insert(db, "cavra-1", **ODD_CAVRA_ROW)
            cavra_insert(db, "cavra-2", **{**ODD_CAVRA_ROW, "timestamp": "2026-03-02T11:00:00Z", "tenant_id": None})
            cavra_insert(db, "cavra-3", **{**ODD_CAVRA_ROW, "rule_id": "rule.1", "workspace_id": "ws-1"})
            db.execute("DELETE FROM activity_decisions WHERE decision_id IN ('d-00010', 'd-00200')")
        for query in RULE_QUERIES:
            # Neither the counts nor their pair rows answer a rule's facets: the listing reads the rule index.
            assert countplan.servable(query, facets=True) is None
            with sqlite3.connect(store.path) as db:
                sql, params = DECISIONS.facets(query, FACET_FIELDS)
                steps = [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql, params)]
            assert any("COVERING INDEX idx_activity_decisions_rule" in step for step in steps), steps
            for top in (10, 1):
                assert await store.facets(query, top) == grouped_facets(store.path, query, top), (query, top)
            total = (await store.list_decisions(query)).total
            assert total == plain(store.path, query, "count(*)")[0][0], query
            histogram = await store.histogram(query, dimensions.DAY)
            assert sorted(histogram) == plain(
                store.path, query, "substr(timestamp, 1, 10), decision, count(*)", "GROUP BY 1, 2"
            ), query
            assert await store.time_bounds(query) == plain(store.path, query, "min(timestamp), max(timestamp)")[0]
        # The filters matched something, CAVRA's rows among them (an empty answer would prove little).
        assert (await store.facets(RULE_QUERIES[2], 10)).total == 1
        assert (await store.facets(RULE_QUERIES[0], 10)).total > 50
    finally:
        await store.close()
