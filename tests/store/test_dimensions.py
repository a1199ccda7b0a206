"""One definition of the counts (store/dimensions.py): the writer, the background folder, `recount`, the
migrations' triggers, the facet readers of both SQL stores and docs/reading.md agree with it."""

from __future__ import annotations

import random
import re
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from cavra_ingest.store import dimensions as dim
from cavra_ingest.store.base import ListQuery
from cavra_ingest.store.migrate import apply_migrations
from cavra_ingest.store.postgres.store import DECISIONS as POSTGRES_DECISIONS
from cavra_ingest.store.recount import recount_sqlite
from cavra_ingest.store.sqlite import countplan, countreads, counts
from cavra_ingest.store.sqlite.listings import DECISIONS as SQLITE_DECISIONS
from cavra_ingest.store.sqlite.store import SqliteStore
from tests.store.test_counts import accepted, cavra_insert, record

ROOT = Path(__file__).resolve().parents[2]
COLUMNS = ("tenant_id", "decision", "timestamp", *dict.fromkeys((*dim.COUNTED_FIELDS, *dim.PAIRED)))


def enc(value: str | None) -> str:
    return "" if value is None else "=" + value


def expected(path: Path) -> Counter[tuple[Any, ...]]:
    """The count rows the declaration says the decisions in the file make, computed here in Python."""
    want: Counter[tuple[Any, ...]] = Counter()
    with sqlite3.connect(path) as db:
        rows = db.execute(f"SELECT {', '.join(COLUMNS)} FROM activity_decisions").fetchall()
    for row in rows:
        d = dict(zip(COLUMNS, row, strict=True))
        tenant, outcome, day = enc(d["tenant_id"]), d["decision"], d["timestamp"][: dim.DAY]
        for name in dim.COUNTED_FIELDS:
            value = enc(d[name])
            want[(dim.DAY, day, tenant, outcome, name, value)] += 1
            for key in (tenant, dim.ANY_TENANT):
                want[(dim.ALL_TIME, "", key, outcome, name, value)] += 1
                if name in dim.ROLLED:
                    want[(dim.ALL_TIME, "", key, dim.ANY_OUTCOME, name, value)] += 1
        for name, given in dim.pairs():
            if d[given] is None:
                continue
            keys = (dim.ANY_TENANT,) if d["tenant_id"] is None else (tenant, dim.ANY_TENANT)
            for key in keys:
                want[(dim.ALL_TIME, "", key, outcome, f"{name}|{given}={d[given]}", enc(d[name]))] += 1
    return want


def stored(path: Path) -> Counter[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT span, bucket, tenant, decision, field, value, n FROM activity_decision_counts")
        return Counter({tuple(row[:6]): row[6] for row in rows if row[6]})


async def test_writer_folder_triggers_and_recount_make_the_declared_count_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(counts, "FOLD_ROWS", 1)
    monkeypatch.setattr(counts, "PAIR_BATCH", 1)
    path = tmp_path / "dims.db"
    rng = random.Random(11)
    store = SqliteStore(path)
    await store.open()
    try:
        # The writer's fold, batch by batch.
        for start in range(0, 120, 40):
            await store.write([accepted(record(rng, n)) for n in range(start, start + 40)])
        assert stored(path) == expected(path)
        # Rows another program inserts, folded by the background folder.
        with sqlite3.connect(path) as db:
            for n in range(30):
                cavra_insert(db, f"cavra-{n}", tenant_id=rng.choice(("acme", None)), workspace_id=f"ws-{n % 3}")
        while (await store.fold_counts(7))[0]:
            pass
        assert stored(path) == expected(path)
        # Counted rows changed and deleted in place move their counts through the migrations' triggers.
        with sqlite3.connect(path) as db:
            db.execute("UPDATE activity_decisions SET severity = 'critical', workspace_id = 'ws-9' WHERE rowid % 5 = 0")
            moved = "2026-04-01T00:00:00.000000+00:00"
            db.execute("UPDATE activity_decisions SET timestamp = ? WHERE rowid % 7 = 0", (moved,))
            db.execute("DELETE FROM activity_decisions WHERE rowid % 3 = 0")
        assert stored(path) == expected(path)
    finally:
        await store.close()
    # `recount` from nothing gives the same rows.
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM activity_decision_counts")
        db.execute("UPDATE activity_decision_counts_state SET counted_rowid = 0, paired_rowid = 0")
    recount_sqlite(path)
    assert stored(path) == expected(path)


def trigger_sql(path: Path, name: str) -> str:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = ?", (name,)).fetchone()[0]


def named(sql: str, pattern: str) -> set[str]:
    return set(re.findall(pattern, sql))


def test_the_migrations_triggers_name_the_declared_fields(tmp_path):
    path = tmp_path / "t.db"
    apply_migrations(path)
    for kind in ("delete", "update"):
        plain = trigger_sql(path, f"trg_activity_decision_counts_{kind}")
        assert named(plain, r"SELECT '(\w+)' AS field") == set(dim.COUNTED_FIELDS)
        assert named(plain, r"WHEN '(\w+)' THEN OLD\.\w+") >= set(dim.COUNTED_FIELDS[:-1])
        summed = re.search(r"f\.field IN \(([^)]*)\)", plain)
        assert summed is not None and set(re.findall(r"'(\w+)'", summed.group(1))) == set(dim.ROLLED)
        paired = trigger_sql(path, f"trg_activity_decision_pair_counts_{kind}")
        assert set(re.findall(r"SELECT '(\w+)' AS field, '(\w+)' AS given", paired)) == set(dim.pairs())
    updated = {
        "trg_activity_decision_counts_update": {"timestamp", "tenant_id", "decision", *dim.COUNTED_FIELDS},
        "trg_activity_decision_pair_counts_update": {"tenant_id", "decision", *dim.PAIR_FIELDS, *dim.PAIRED},
    }
    for name, columns in updated.items():
        match = re.search(r"AFTER UPDATE OF (.*?)\s+ON activity_decisions", trigger_sql(path, name), re.S)
        assert match is not None and {c.strip() for c in match.group(1).split(",")} == columns


def test_the_fold_and_the_readers_follow_the_declaration():
    for name in dim.COUNTED_FIELDS:
        assert f"'{name}'" in counts.DELTA
    for name, given in dim.pairs():
        assert f"SELECT '{name}' AS field, '{given}' AS given" in counts.PAIR_FOLD
    # Facets over the table (the SQLite scans, the PostgreSQL store) group by the declared facet fields.
    for listing in (SQLITE_DECISIONS, POSTGRES_DECISIONS):
        sql, _ = listing.facets(ListQuery(), dim.FACET_FIELDS)
        for name in dim.FACET_FIELDS:
            assert name in sql
    scan = " ".join(sql for sql, _ in countreads.facet_scans(ListQuery(), 0))
    assert all(f"GROUP BY {name}" in scan for name in dim.FACET_FIELDS)
    # What the counts answer: a paired filter's facets, a counted field's total, nothing else.
    assert countplan.servable(ListQuery(equals=(("workspace_id", ("w",)),)), facets=True) is not None
    assert countplan.servable(ListQuery(equals=(("rule_id", ("r",)),)), facets=False) is not None
    assert countplan.servable(ListQuery(equals=(("rule_id", ("r",)),)), facets=True) is None


@pytest.mark.parametrize("doc", ["docs/reading.md"])
def test_the_docs_list_the_declared_dimensions(doc):
    assert dim.markdown() in (ROOT / doc).read_text(), f"paste store.dimensions.markdown() into {doc}"
