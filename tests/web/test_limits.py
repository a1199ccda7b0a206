"""Issue 18: each abuse the security review reproduced, reproduced here first, then held off."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import stat
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from cavra_ingest.http.keys import BUDGET_KEY
from cavra_ingest.settings import Settings
from cavra_ingest.store import ListQuery
from tests.conftest import MakeClient, decision, drain

JSON = {"Content-Type": "application/json"}


# --- Output: security headers, Host check, CSV -------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/healthz", "/decisions", "/decisions/nope", "/no-such-route", "/openapi.json", "/console", "/docs"]
)
async def test_every_response_carries_the_security_headers(client: TestClient, path: str) -> None:
    response = await client.get(path)
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    # No version for whoever looks for a known advisory.
    assert response.headers["Server"] == "cavra-ingest"


async def test_streamed_exports_and_errors_carry_them_too(client: TestClient) -> None:
    for response in (await client.get("/decisions.csv"), await client.post("/decisions", data=b"{", headers=JSON)):
        assert response.headers["X-Content-Type-Options"] == "nosniff" and response.headers["Server"] == "cavra-ingest"


async def test_docs_page_has_a_csp_that_allows_only_its_own_inline_script(client: TestClient) -> None:
    policy = (await client.get("/docs")).headers["Content-Security-Policy"]
    assert "script-src 'sha256-" in policy and "'unsafe-inline'" not in policy and "default-src 'none'" in policy


async def test_allowed_hosts_refuse_a_rebinding_host(make_client: MakeClient) -> None:
    client = await make_client(allowed_hosts="127.0.0.1,localhost:8080")
    assert (await client.get("/healthz", headers={"Host": "127.0.0.1"})).status == 200
    assert (await client.get("/healthz", headers={"Host": "localhost:8080"})).status == 200
    assert (await client.get("/healthz", headers={"Host": "127.0.0.1:9999"})).status == 200  # bare name: any port
    assert (await client.get("/healthz", headers={"Host": "localhost:9999"})).status == 421
    refused = await client.get("/decisions", headers={"Host": "attacker.example:8080"})
    assert refused.status == 421 and (await refused.json())["error"] == "misdirected_request"


FORMULAS = ['=HYPERLINK("http://x","y")', '=IMPORTXML(A1,"//a")', "+cmd|' /C calc'!A0", "-2+3+cmd", "@SUM(1+1)"]
FORMULAS += ["\t=1+1", "\r=1+1"]


async def test_csv_export_neutralizes_formula_cells(client: TestClient) -> None:
    """OWASP CSV injection: a cell starting with = + - @ tab or CR is prefixed with a quote."""
    sent = [decision(session_id="s-csv", target=text, reason=text) for text in FORMULAS]
    assert (await client.post("/decisions", json=sent)).status == 200
    text = await (await client.get("/decisions.csv", params={"session_id": "s-csv"})).text()
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert sorted(row["target"] for row in rows) == sorted("'" + formula for formula in FORMULAS)
    assert all(row["reason"] == row["target"] for row in rows)
    # The NDJSON export is data, not a spreadsheet: it keeps the text exactly.
    lines = (await (await client.get("/decisions.ndjson", params={"session_id": "s-csv"})).text()).splitlines()
    assert sorted(json.loads(line)["target"] for line in lines) == sorted(FORMULAS)


# --- History that cannot be bent ------------------------------------------------------------------------


async def test_every_decision_carries_received_at_and_a_resend_stays_a_duplicate(any_client: TestClient) -> None:
    sent = decision(session_id="s-recv")
    before = datetime.now(UTC)
    first = await (await any_client.post("/decisions", json=sent)).json()
    received = datetime.fromisoformat(first["received_at"])
    assert before - timedelta(seconds=1) <= received <= datetime.now(UTC)
    again = await any_client.post("/decisions", json=[sent])
    body = await again.json()
    assert again.status == 200 and body["duplicates"] == 1, body
    stored = await (await any_client.get(f"/decisions/{sent['decision_id']}")).json()
    assert stored["received_at"] == first["received_at"]


@pytest.mark.parametrize("year", [9999, datetime.now(UTC).year + 1])
async def test_future_timestamps_are_refused_with_the_rule_named(any_client: TestClient, year: int) -> None:
    response = await any_client.post("/decisions", json=decision(timestamp=f"{year}-12-31T23:00:00+00:00"))
    body = await response.json()
    assert response.status == 422 and body["field"] == "$.timestamp"
    assert "CAVRA_MAX_FUTURE_SKEW_S" in body["detail"]


async def test_skew_within_the_window_is_accepted(client: TestClient) -> None:
    soon = (datetime.now(UTC) + timedelta(seconds=60)).isoformat()
    assert (await client.post("/decisions", json=decision(timestamp=soon))).status == 200


async def test_a_past_horizon_is_off_by_default_and_enforced_when_set(make_client: MakeClient) -> None:
    ancient = decision(timestamp="0001-01-02T00:00:00+00:00")
    assert (await (await make_client()).post("/decisions", json=ancient)).status == 200
    bounded = await make_client(max_past_age_s=86400.0)
    response = await bounded.post(
        "/decisions",
        json=[decision(timestamp="2001-01-01T00:00:00+00:00"), decision(timestamp=datetime.now(UTC).isoformat())],
    )
    body = await response.json()
    assert response.status == 207 and body["results"][0]["error"]["status"] == 422
    assert "CAVRA_MAX_PAST_AGE_S" in body["results"][0]["error"]["detail"]


async def test_session_lifecycle_refuses_going_back_and_records_every_change(any_client: TestClient) -> None:
    await any_client.post("/decisions", json=decision(session_id="s-life", repository="acme/life"))
    done = await any_client.post("/sessions", json={"session_id": "s-life", "state": "completed"})
    assert done.status == 200
    for back in ("active", "failed"):
        refused = await any_client.post("/sessions", json={"session_id": "s-life", "state": back})
        body = await refused.json()
        assert refused.status == 409 and body["error"] == "conflict"
        assert f"from completed to {back}" in body["detail"]
    # Staying is a no-op (a retried request), then archived is allowed and final.
    assert (await any_client.post("/sessions", json={"session_id": "s-life", "state": "completed"})).status == 200
    assert (await any_client.post("/sessions", json={"session_id": "s-life", "state": "archived"})).status == 200
    refused = await any_client.post("/sessions", json={"session_id": "s-life", "state": "active"})
    assert refused.status == 409
    session = await (await any_client.get("/sessions/s-life")).json()
    assert session["state"] == "archived"
    changes = [(c["from"], c["to"]) for c in session["state_history"]]
    assert changes == [("active", "completed"), ("completed", "archived")]
    assert all(
        c["by"] == "peer:127.0.0.1" and c["at"] <= datetime.now(UTC).isoformat() for c in session["state_history"]
    )


async def test_a_session_cannot_leave_its_repository_listing(any_client: TestClient) -> None:
    await any_client.post("/decisions", json=decision(session_id="s-hide", repository="acme/watched"))
    moved = await any_client.post("/sessions", json={"session_id": "s-hide", "repository": "elsewhere"})
    assert moved.status == 200 and (await moved.json())["repository"] == "acme/watched"
    listed = await (await any_client.get("/sessions", params={"repository": "acme/watched"})).json()
    assert [s["session_id"] for s in listed["items"]] == ["s-hide"]


# --- Two 500s ------------------------------------------------------------------------------------------


async def test_a_cursor_holding_nul_is_a_400_on_every_store(any_client: TestClient) -> None:
    import base64

    from cavra_ingest.http.routes.reads import _fingerprint

    for _ in range(3):
        await any_client.post("/decisions", json=decision(session_id="s-nul"))
    fingerprint = _fingerprint(ListQuery(), "decisions")
    forged = json.dumps({"k": ["2026-01-01T00:00:00+00:00", "a\u0000b"], "f": fingerprint}).encode()
    token = base64.urlsafe_b64encode(forged).decode().rstrip("=")
    response = await any_client.get("/decisions", params={"cursor": token})
    body = await response.json()
    assert response.status == 400 and body["parameter"] == "cursor", body


@pytest.mark.parametrize("depth", [500, 980])
async def test_nul_at_the_bottom_of_a_deep_context_is_a_422_for_that_record_only(
    any_client: TestClient, depth: int
) -> None:
    """Either the NUL is found (nul_path is iterative) or the depth is refused: a 422, never a 500."""
    deep = b"[" * depth + b'"\\u0000"' + b"]" * depth
    first_record = (
        json.dumps(decision(session_id="s-deep", context={"a": 0})).encode().replace(b'"a": 0', b'"a": ' + deep)
    )
    alone = await any_client.post("/decisions", data=first_record, headers=JSON)
    problem = await alone.json()
    assert alone.status == 422, problem
    if depth == 500:
        assert "NUL" in problem["detail"] and problem["field"] == "$.context.a" + "[0]" * depth, problem
    body_bytes = first_record + b"\n" + json.dumps(decision(session_id="s-deep")).encode()
    response = await any_client.post("/decisions", data=body_bytes, headers={"Content-Type": "application/x-ndjson"})
    body = await response.json()
    assert response.status == 207, body
    first, second = body["results"]
    assert first["status"] == "invalid" and first["error"]["status"] == 422, first
    assert second["status"] == "created"


# --- Resources -----------------------------------------------------------------------------------------


async def wait_until(condition: Any, timeout: float = 5.0) -> None:
    """Poll a condition on the server's own state (not a sleep-and-hope: it fails loudly on timeout)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def raw_post(port: int, length: int, sent: bytes = b"") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        "POST /decisions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    )
    writer.write(head.encode() + sent)
    await writer.drain()
    return reader, writer


async def test_bodies_in_flight_are_capped_with_503_before_reading(make_client: MakeClient) -> None:
    client = await make_client(max_inflight_body_bytes=100_000, body_read_timeout_s=5.0)
    assert client.port is not None
    # Two slow bodies of 40 kB hold 80 kB of the 100 kB budget while they trickle in.
    slow = [await raw_post(client.port, 40_000, b"[") for _ in range(2)]
    budget = client.app[BUDGET_KEY]
    await wait_until(lambda: budget.in_flight >= 80_000)
    over = await client.post("/decisions", data=json.dumps([decision()] * 1).encode() + b" " * 30_000, headers=JSON)
    body = await over.json()
    assert over.status == 503 and over.headers["Retry-After"] == "1", body
    assert "in flight" in body["detail"]
    # Small bodies still fit beside them, and the slow ones release their share when they end.
    assert (await client.post("/decisions", json=decision())).status == 200
    for _, writer in slow:
        writer.close()
    await wait_until(lambda: budget.in_flight == 0)


async def test_below_the_disk_floor_writes_get_503_and_reads_work(make_client: MakeClient) -> None:
    client = await make_client(min_free_disk_bytes=1 << 60)
    refused = await client.post("/decisions", json=decision())
    body = await refused.json()
    assert refused.status == 503 and "Retry-After" in refused.headers and "disk space" in body["detail"]
    assert (await client.post("/sessions", json={"session_id": "s", "state": "completed"})).status == 503
    assert (await client.get("/decisions")).status == 200
    assert (await client.get("/healthz")).status == 200


def test_free_disk_space_is_read_at_most_once_a_second(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cavra_ingest.core.errors import ApiError
    from cavra_ingest.http import guards

    free = [10_000]
    reads: list[object] = []

    def disk_usage(folder: object) -> Any:
        reads.append(folder)
        return type("Usage", (), {"free": free[0]})()

    monkeypatch.setattr(guards.shutil, "disk_usage", disk_usage)
    now = [100.0]
    floor = guards.DiskFloor(Settings.of(activity_db=str(tmp_path / "a.db"), min_free_disk_bytes=5_000), lambda: now[0])
    floor.check()
    free[0] = 1_000  # the disk fills up
    floor.check()  # within the second: the last reading stands
    assert len(reads) == 1
    now[0] += guards.DISK_CHECK_INTERVAL_S
    with pytest.raises(ApiError) as refused:
        floor.check()
    assert refused.value.status == 503 and len(reads) == 2
    with pytest.raises(ApiError):
        floor.check()  # still refused from the cached reading, without another read
    assert len(reads) == 2


async def test_the_records_of_one_body_share_their_received_at(client: TestClient) -> None:
    sent = [decision(session_id="s-batch-recv"), decision(session_id="s-batch-recv")]
    response = await client.post("/decisions", json=sent)
    assert response.status == 200, await response.text()
    await drain(client)
    stored = [await (await client.get(f"/decisions/{item['decision_id']}")).json() for item in sent]
    assert stored[0]["received_at"] == stored[1]["received_at"]


async def test_a_huge_array_of_numbers_stops_at_the_record_limit(client: TestClient) -> None:
    """8 MiB of `1,`: a 413 naming the limit, decided after 5001 elements, not 4 million."""
    body = b"[" + b"1," * (4 * 1024 * 1024 - 2) + b"1]"
    assert len(body) < 8 * 1024 * 1024
    response = await client.post("/decisions", data=io.BytesIO(body), headers=JSON)
    assert response.status == 413 and "more than 5000" in (await response.json())["detail"]
    ndjson = await client.post("/decisions", data=b"1\n" * 10_000, headers={"Content-Type": "application/x-ndjson"})
    assert ndjson.status == 413


def test_split_records_decodes_no_more_than_the_limit() -> None:
    import tracemalloc

    from cavra_ingest.core.errors import ApiError
    from cavra_ingest.core.validate import split_records

    body = b"[" + b"1," * (4 * 1024 * 1024 - 2) + b"1]"
    tracemalloc.start()
    try:
        with pytest.raises(ApiError):
            split_records(body, False, 5000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000, peak  # decoding every element took ~270 MB
    with pytest.raises(ApiError):
        split_records(b'[{"a":1}, null ,{"b":[1,2]}]', False, 2)
    raws, batch = split_records(b'[{"a":1}, null ,{"b":[1,2]}]', False, 3)
    assert batch and [bytes(r) for r in raws] == [b'{"a":1}', b"null", b'{"b":[1,2]}']


# --- Settings and files ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://cavra:s3cret@db:5432/app",
        "postgresql://cavra@db/app?password=s3cret",
        "postgresql://db/app?sslmode=require&PASSWORD=s3cret&application_name=x",
        "postgres://u:s3cret@db/app?sslpassword=s3cret",
    ],
)
def test_every_credential_form_is_redacted_from_the_store_label(url: str) -> None:
    label = Settings.of(activity_db=url).store.label
    assert "s3cret" not in label and "***" in label


def test_new_sqlite_files_are_private(tmp_path: Path) -> None:
    from cavra_ingest.store.migrate import apply_migrations

    path = tmp_path / "new.db"
    apply_migrations(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_the_connection_cap_stays_below_the_descriptor_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    import resource

    from cavra_ingest.http import serving

    monkeypatch.setattr(resource, "getrlimit", lambda _: (256, 4096))
    assert serving.connection_cap(Settings.of(max_connections=512)) == 256 - serving.FD_RESERVE
    assert serving.connection_cap(Settings.of(max_connections=100)) == 100


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_heavy_statement_time_limit_gives_503_and_point_reads_go_on(make_client: MakeClient, kind: str) -> None:
    """SQLite's progress handler and PostgreSQL's statement_timeout (1 ms here) stop the facets statement."""
    client = await make_client(kind, heavy_query_timeout_s=0.0005)
    batch = [decision(session_id=f"s-{i % 50}", agent_id=f"a-{i % 7}") for i in range(5000)]
    batch += [decision(session_id=f"s-{i % 50}", agent_id=f"a-{i % 7}") for i in range(5000)]
    for half in (batch[:5000], batch[5000:]):
        posted = await client.post("/decisions", data=io.BytesIO(json.dumps(half).encode()), headers=JSON)
        assert posted.status == 200
    await drain(client)
    started = time.monotonic()
    response = await client.get("/decisions/facets", params={"agent_id": "a-1"})
    body = await response.json()
    assert response.status == 503 and "limit" in body["detail"] and response.headers["Retry-After"] == "1", body
    assert time.monotonic() - started < 5
    assert (await client.get(f"/decisions/{batch[0]['decision_id']}")).status == 200


async def test_a_cancelled_heavy_read_interrupts_its_statement(tmp_path: Path) -> None:
    """The client went away: its statement stops at once, and the reader serves the next heavy read."""
    from cavra_ingest.store.sqlite.store import SqliteStore

    store = SqliteStore(tmp_path / "a.db", heavy_readers=1, heavy_query_timeout_s=60.0)
    await store.open()
    try:
        endless = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n"

        async def run() -> None:
            async with store.readers.heavy() as db:
                await db.execute_fetchall(endless)

        task = asyncio.create_task(run())
        await wait_until(lambda: store.readers.heavies.empty())  # (the reader is lent)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        started = time.monotonic()
        facets = await store.facets(ListQuery(), 5)
        assert facets.total == 0 and time.monotonic() - started < 5
    finally:
        await store.close()


async def test_a_heavy_handler_is_cancelled_when_its_client_disconnects() -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from cavra_ingest.http.guards import cancel_on_disconnect

    cancelled = asyncio.Event()

    @cancel_on_disconnect
    async def forever(request: web.Request) -> web.Response:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return web.Response()

    app = web.Application()
    app.router.add_get("/slow", forever)
    async with TestServer(app) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        await asyncio.wait_for(cancelled.wait(), 5)
