"""Logs: a request id on every line (taken or made, echoed), one access line per request, JSON or text."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import aiohttp
import pytest

from cavra_ingest.http import logs
from cavra_ingest.http.keys import STORE_KEY
from cavra_ingest.settings import Settings
from tests.conftest import MakeClient, decision, writer_of
from tests.procs import Server


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """Collect the app's records as JSON lines, as `--log-format json` writes them."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logs.RequestIdFilter())
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("cavra_ingest")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)  # setLevel, not `.level =`: it clears the loggers' cached decisions
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(level)


def entries(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def test_access_line_carries_the_request_id_it_echoes(make_client: MakeClient, json_lines) -> None:
    client = await make_client()
    response = await client.post("/decisions", json=decision(), headers={"X-Request-ID": "req-abc.1"})
    assert response.status == 200 and response.headers["X-Request-ID"] == "req-abc.1"
    made = await client.get("/decisions/missing")
    assert made.status == 404 and len(made.headers["X-Request-ID"]) == 32
    # A header that could forge log content is replaced, not echoed.
    forged = await client.get("/healthz", headers={"X-Request-ID": 'x" injected\tvalue'})
    assert forged.headers["X-Request-ID"] != 'x" injected\tvalue'
    access = [entry for entry in entries(json_lines) if entry["logger"] == "cavra_ingest.access"]
    assert [(e["method"], e["path"], e["status"]) for e in access] == [
        ("POST", "/decisions", 200),
        ("GET", "/decisions/missing", 404),
        ("GET", "/healthz", 200),
    ]
    assert access[0]["request_id"] == "req-abc.1" and access[1]["request_id"] == made.headers["X-Request-ID"]
    assert all(e["duration_ms"] >= 0 and e["level"] == "info" and e["time"].endswith("Z") for e in access)


async def test_access_log_can_be_turned_off(make_client: MakeClient, json_lines) -> None:
    client = await make_client(access_log=False)
    assert (await client.get("/healthz")).status == 200
    assert not [e for e in entries(json_lines) if e["logger"] == "cavra_ingest.access"]


def test_text_format_is_one_readable_line_with_fields() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.TextFormatter("%(levelname)s %(name)s %(message)s"))
    record = logging.LogRecord("cavra_ingest.access", logging.INFO, __file__, 1, "GET / 200", None, None)
    record.status = 200
    handler.emit(record)
    assert stream.getvalue() == "INFO cavra_ingest.access GET / 200 status=200\n"


async def test_readyz_is_ready_then_not_while_draining(make_client: MakeClient) -> None:
    client = await make_client()
    ready = await client.get("/readyz")
    assert ready.status == 200 and (await ready.json()) == {"ready": True, "store": "sqlite", "reason": None}
    writer_of(client).begin_stop()
    draining = await client.get("/readyz")
    assert draining.status == 503 and "draining" in (await draining.json())["reason"]
    assert draining.headers["Retry-After"] == "1"


async def test_readyz_is_503_when_the_store_does_not_answer(make_client: MakeClient, monkeypatch) -> None:
    client = await make_client()
    store = client.app[STORE_KEY]

    async def broken(session_id: str) -> bytes | None:
        raise OSError("disk I/O error")

    monkeypatch.setattr(store, "get_session", broken)
    response = await client.get("/readyz")
    assert response.status == 503 and (await response.json())["reason"] == "store is not answering: OSError"
    assert (await client.get("/healthz")).status == 200  # liveness is not readiness


async def test_a_served_process_logs_json_start_access_and_what_it_drained(tmp_path) -> None:
    server = Server(tmp_path / "served.db", env={"CAVRA_LOG_FORMAT": "json"})
    await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{server.url}/decisions", json=[decision() for _ in range(3)]) as response:
                assert response.status == 200
        assert (await server.terminate(Settings().writer.drain_deadline_s + 5))[0] == 0
    finally:
        server.kill()
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    assert len(lines) == len(server.log().splitlines()), server.log()  # every line is JSON
    messages = [line["message"] for line in lines]
    # Open mode on loopback says so first (auth), then the start-up line.
    assert "no token exists" in messages[0]
    assert messages[1] == "starting" and lines[1]["store"] == "sqlite"
    assert "POST /decisions 200" in messages
    assert "stopping: draining the writer" in messages
    stopped = lines[-1]
    assert stopped["message"] == "stopped" and stopped["records"] == 3 and stopped["drained_records"] == 0


def test_made_request_ids_are_32_hex_characters_and_never_repeat() -> None:
    made = [logs.REQUEST_IDS.next() for _ in range(1000)]
    assert len(set(made)) == 1000
    assert all(len(rid) == 32 and int(rid, 16) >= 0 for rid in made)


def test_formatted_time_changes_with_the_second_it_caches() -> None:
    formatter = logs.TextFormatter("%(asctime)s %(message)s")
    formatter.converter = __import__("time").gmtime
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    record.created, record.msecs = 0.25, 250.0
    assert formatter.format(record) == "1970-01-01 00:00:00,250 m"
    record.created, record.msecs = 1.5, 500.0
    assert formatter.format(record) == "1970-01-01 00:00:01,500 m"
    assert formatter.formatTime(record, "%H:%M:%S") == "00:00:01"
