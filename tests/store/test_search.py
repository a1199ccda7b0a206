"""Free-text search (`q`), prefix filters and the histogram: the same answers on every store."""

from __future__ import annotations

import csv
import io
import sqlite3
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from cavra_ingest.http.keys import RUNTIME_KEY
from tests.conftest import decision


def rows() -> list[dict[str, Any]]:
    return [
        decision(decision_id="d-env", target="/srv/app/.env", rule_id="fs.secrets", reason="reads a secrets file"),
        decision(
            decision_id="d-push",
            decision="block",
            action_type="git_operation",
            target="git push --force origin main",
            rule_id="git.no_force_push",
            repository="acme/payments",
        ),
        decision(decision_id="d-pay", target="services/payments/api/handler.py", repository="acme/payments-api"),
        decision(
            decision_id="d-op",
            target="make",
            requested_operation="Run the DEPLOY script",
            agent_id="claude-code-7",
            repository="other/thing",
        ),
        decision(decision_id="d-tool", target="x", tool_name="browser_fetch", mcp_server="web-mcp"),
        decision(decision_id="d-odd", target="100%_done\\ok", policy_id="pol-éclair"),
    ]


async def seeded(client: TestClient) -> None:
    response = await client.post("/decisions", json=rows())
    assert response.status == 200, await response.text()


async def found(client: TestClient, query: str) -> list[str]:
    response = await client.get(f"/decisions?limit=500&{query}")
    assert response.status == 200, await response.text()
    return sorted(item["decision_id"] for item in (await response.json())["items"])


CASES = [
    ("q=.env", ["d-env"]),
    ("q=%22git+push+--force%22", ["d-push"]),
    ("q=git+push+--force", ["d-push"]),  # words: each anywhere
    ("q=%22push+git%22", []),  # a phrase keeps its order
    ("q=payments/api", ["d-pay"]),
    ("q=deploy", ["d-op"]),  # requested_operation, ASCII case ignored
    ("q=SECRETS", ["d-env"]),  # reason and rule_id
    ("q=web-mcp+fetch", ["d-tool"]),
    ("q=100%25_", ["d-odd"]),  # LIKE's wildcards are literal
    ("q=done\\ok", ["d-odd"]),
    ("q=%C3%A9clair", ["d-odd"]),
    ("q=%C3%89CLAIR", []),  # only ASCII letters fold, on every store
    ("q=env+rm", []),  # every term must match; a short term is checked too
    ("q=force&decision=allow", []),
    ("q=force&decision=block", ["d-push"]),
    ("repository=acme/*", ["d-env", "d-odd", "d-pay", "d-push", "d-tool"]),
    ("repository=acme/pay*", ["d-pay", "d-push"]),
    ("repository=acme/payments-*&repository=other/thing", ["d-op", "d-pay"]),
    ("agent_id=claude*", ["d-op"]),
    ("rule_id=git.*&q=main", ["d-push"]),
    ("action_type=git*&repository=*", ["d-push"]),
]


@pytest.mark.slow
@pytest.mark.parametrize(("query", "want"), CASES)
async def test_search_and_prefixes_agree_on_every_store(any_client, query, want):
    await seeded(any_client)
    assert await found(any_client, query) == sorted(want)


async def test_indexed_unindexed_and_cavra_written_rows_are_all_found(make_client, tmp_path):
    client = await make_client("sqlite")
    await seeded(client)
    indexer = client.app[RUNTIME_KEY].indexer
    await indexer.catch_up()
    # A row written by CAVRA itself, straight into the table, after the indexer caught up.
    with sqlite3.connect(tmp_path / "activity.db") as db:
        db.execute(
            "INSERT INTO activity_decisions (decision_id, session_id, agent_id, actor, repository, policy_pack,"
            " action_type, target, rule_id, decision, severity, timestamp, correlation_id, payload)"
            " VALUES ('cavra-1', 's', 'a', 'ai', 'r', 'p', 'shell', 'cat ~/.env', 'r1', 'block', 'high',"
            " '2026-03-01T11:00:00.000000+00:00', 'c', ?)",
            ('{"decision_id": "cavra-1", "reason": "Dotenv read"}',),
        )
    assert await found(client, "q=.env") == ["cavra-1", "d-env"]
    assert await found(client, "q=dotenv") == ["cavra-1"]
    health = await (await client.get("/healthz")).json()
    assert health["search"]["indexed_upto"] == 6 and health["search"]["lag_rows"] in {0, 1}
    await indexer.catch_up()
    health = await (await client.get("/healthz")).json()
    assert health["search"] == {"indexed_upto": 7, "lag_rows": 0, "lag_s": 0.0}
    assert await found(client, "q=.env") == ["cavra-1", "d-env"]
    assert await found(client, "q=dotenv") == ["cavra-1"]
    with sqlite3.connect(tmp_path / "activity.db") as db:
        assert db.execute("SELECT rowid FROM activity_search WHERE activity_search MATCH '\"env\"'").fetchall()
        plan = " ".join(
            row[3]
            for row in db.execute(
                "EXPLAIN QUERY PLAN SELECT 1 FROM activity_decisions WHERE rowid IN"
                " (SELECT rowid FROM activity_search WHERE activity_search MATCH 'x')"
            )
        )
    assert "VIRTUAL TABLE INDEX" in plan


async def test_search_works_with_the_indexer_off(make_client):
    client = await make_client("sqlite", search_index=False)
    await seeded(client)
    assert client.app[RUNTIME_KEY].indexer is None
    assert await found(client, "q=.env") == ["d-env"]
    assert (await (await client.get("/healthz")).json())["search"] is None


async def test_q_applies_to_facets_and_exports(any_client):
    await seeded(any_client)
    facets = await (await any_client.get("/decisions/facets?q=%22a%22+payments")).json()
    assert facets["total"] == 1
    assert {f["value"]: f["count"] for f in facets["facets"]["decision"]} == {"allow": 1}
    facets = await (await any_client.get("/decisions/facets?repository=acme/pay*")).json()
    assert {f["value"]: f["count"] for f in facets["facets"]["decision"]} == {"allow": 1, "block": 1}
    body = await (await any_client.get("/decisions.csv?q=%22p%22+.py&repository=acme/pay*")).text()
    assert sorted(r["decision_id"] for r in csv.DictReader(io.StringIO(body))) == ["d-pay"]
    body = await (await any_client.get("/decisions.csv?repository=acme/pay*")).text()
    assert sorted(r["decision_id"] for r in csv.DictReader(io.StringIO(body))) == ["d-pay", "d-push"]
    lines = (await (await any_client.get("/decisions.ndjson?q=.env")).text()).splitlines()
    assert len(lines) == 1 and '"d-env"' in lines[0]


async def test_cursor_is_bound_to_q(any_client):
    await seeded(any_client)
    first = await (await any_client.get("/decisions?limit=1&repository=acme/*")).json()
    assert first["next_cursor"]
    again = await any_client.get(f"/decisions?limit=1&repository=acme/x*&cursor={first['next_cursor']}")
    assert again.status == 400


@pytest.mark.parametrize(
    "query",
    ["q=ab", "q=a+b+%22c%22", "q=" + "x" * 257, "q=a%0Ab+env", "q=a+b+c+d+e+f+g+h+i+env", "q=env&q=abc"],
)
async def test_bad_search_is_a_400_naming_q(client, query):
    response = await client.get(f"/decisions?{query}")
    assert response.status == 400
    assert (await response.json())["parameter"] == "q"


async def test_search_limits_are_settings(make_client):
    client = await make_client("sqlite", search_max_chars=5, search_max_terms=1)
    assert (await client.get("/decisions?q=abcdef")).status == 400
    assert (await client.get("/decisions?q=abc+def")).status == 400
    assert (await client.get("/decisions?q=abcde")).status == 200


async def test_q_is_not_a_sessions_filter(client):
    assert (await client.get("/sessions?q=env")).status == 400


def at(minute: int, second: int = 0, hour: int = 10) -> str:
    return f"2026-03-01T{hour:02d}:{minute:02d}:{second:02d}+00:00"


async def test_histogram_counts_per_bucket_and_outcome(any_client):
    body = [
        decision(timestamp=at(0, 5), decision="allow"),
        decision(timestamp=at(3), decision="block"),
        decision(timestamp=at(7), decision="block", target="cat .env"),
        decision(timestamp=at(14, 59), decision="allow"),
        decision(timestamp=at(0, hour=12), decision="warn"),
    ]
    assert (await any_client.post("/decisions", json=body)).status == 200
    reply = await (
        await any_client.get("/decisions/histogram?interval=5m&since=2026-03-01T10:00:00Z&until=2026-03-01T10:20:00Z")
    ).json()
    assert reply["interval"] == "5m" and reply["interval_seconds"] == 300 and reply["total"] == 4
    assert [(b["start"], b["counts"]) for b in reply["buckets"]] == [
        ("2026-03-01T10:00:00+00:00", {"allow": 1, "block": 1}),
        ("2026-03-01T10:05:00+00:00", {"block": 1}),
        ("2026-03-01T10:10:00+00:00", {"allow": 1}),
        ("2026-03-01T10:15:00+00:00", {}),
    ]
    # Open window: the matches' own span; auto picks about 60 buckets.
    reply = await (await any_client.get("/decisions/histogram")).json()
    assert reply["interval"] == "5m"
    assert reply["total"] == 5 and 20 <= len(reply["buckets"]) <= 130
    assert sum(b["counts"].get("warn", 0) for b in reply["buckets"]) == 1
    reply = await (await any_client.get("/decisions/histogram?q=.env&interval=1h")).json()
    assert [b["counts"] for b in reply["buckets"]] == [{"block": 1}]
    reply = await (await any_client.get("/decisions/histogram?decision=require_approval")).json()
    assert reply["total"] == 0 and reply["buckets"] == []


@pytest.mark.slow
@pytest.mark.parametrize("query", ["interval=2m", "interval=1m&since=2020-01-01T00:00:00Z", "interval=5m&interval=1h"])
async def test_bad_histograms_are_400s(any_client, query):
    await any_client.post("/decisions", json=[decision(timestamp=at(1))])
    response = await any_client.get(f"/decisions/histogram?{query}")
    assert response.status == 400
    assert (await response.json())["parameter"] == "interval"


async def test_histogram_bucket_limit_is_a_setting(make_client):
    client = await make_client("sqlite", histogram_max_buckets=3)
    url = "/decisions/histogram?interval=1m&since=2026-03-01T10:00:00Z&until=2026-03-01T10:0{}:00Z"
    assert (await client.get(url.format(3))).status == 200
    assert (await client.get(url.format(4))).status == 400


async def test_an_unselective_search_scans_and_agrees(make_client, monkeypatch):
    from cavra_ingest.store.sqlite import listings

    client = await make_client("sqlite")
    await seeded(client)
    await client.app[RUNTIME_KEY].indexer.catch_up()
    indexed = await found(client, "q=.py")
    facets = await (await client.get("/decisions/facets?q=.py")).json()
    monkeypatch.setattr(listings, "SEARCH_PROBE_ROWS", 1)
    assert await found(client, "q=.py") == indexed and len(indexed) == 1
    assert await (await client.get("/decisions/facets?q=.py")).json() == facets


async def test_sessions_exports_stream_every_match(any_client):
    await any_client.post(
        "/decisions", json=[decision(session_id=f"s-{n}", repository=f"acme/r{n % 2}") for n in range(5)]
    )
    body = await (await any_client.get("/sessions.csv?repository=acme/r1")).text()
    assert sorted(r["session_id"] for r in csv.DictReader(io.StringIO(body))) == ["s-1", "s-3"]
    lines = (await (await any_client.get("/sessions.ndjson?repository=acme/*")).text()).splitlines()
    assert len(lines) == 5
    assert (await any_client.get("/sessions.csv?q=x")).status == 400


async def test_postgres_indexes_in_the_background_and_finds_queued_rows(make_client):
    import asyncpg

    from tests.conftest import POSTGRES_URL

    client = await make_client("postgres")
    await seeded(client)
    store = client.app[RUNTIME_KEY].store
    indexer = client.app[RUNTIME_KEY].indexer
    await indexer.catch_up()
    conn = await asyncpg.connect(POSTGRES_URL, server_settings={"search_path": store.schema})
    try:
        assert await conn.fetchval("SELECT count(*) FROM activity_search") == 6
        assert await conn.fetchval("SELECT count(*) FROM activity_search_queue") == 0
        # CAVRA writing straight into the table, with another search_path: its row is queued all the same.
        await conn.execute(
            f'INSERT INTO "{store.schema}".activity_decisions (decision_id, session_id, agent_id, actor, repository,'
            " policy_pack, action_type, target, rule_id, decision, severity, timestamp, correlation_id, payload)"
            " VALUES ('cavra-1', 's', 'a', 'ai', 'r', 'p', 'shell', 'cat ~/.env', 'r1', 'block', 'high',"
            " '2026-03-01T11:00:00.000000+00:00', 'c', $1)",
            '{"decision_id": "cavra-1", "reason": "Dotenv read"}',
        )
        assert await found(client, "q=.env") == ["cavra-1", "d-env"]
        health = (await (await client.get("/healthz")).json())["search"]
        assert health["indexed_upto"] is None
        await indexer.catch_up()
        assert await conn.fetchval("SELECT count(*) FROM activity_search_queue") == 0
        assert await found(client, "q=.env") == ["cavra-1", "d-env"]
        assert await found(client, "q=dotenv") == ["cavra-1"]
        assert (await (await client.get("/healthz")).json())["search"]["lag_rows"] == 0
    finally:
        await conn.close()


async def test_auto_histogram_fits_any_window(client):
    await client.post("/decisions", json=[decision(timestamp="2026-03-01T10:00:00+00:00")])
    reply = await (
        await client.get("/decisions/histogram?since=1000-01-01T00:00:00Z&until=9999-12-31T00:00:00Z")
    ).json()
    assert reply["interval"].endswith("d") and 55 <= len(reply["buckets"]) <= 61 and reply["total"] == 1
    response = await client.get("/decisions/histogram?since=0001-01-01T00:00:00Z&interval=30d")
    assert response.status in {200, 400}
