"""Real receivers for the sink tests: HTTP servers on free ports that decode what they get with the same
packages a SIEM's side would use (standardwebhooks, opentelemetry-proto), and a deadline-bound wait."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

# (request number from 1, decoded records) -> HTTP status to answer.
Behaviour = Callable[[int, list[dict[str, Any]]], int]


@dataclass
class Receiver:
    url: str
    secret: str | None = None
    behaviour: Behaviour = lambda n, records: 200  # noqa: E731
    requests: int = 0
    # Records of the requests answered 2xx, in arrival order (duplicates kept).
    records: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    # Seconds each request takes to answer: a slow receiver, so the sink lags.
    delay_s: float = 0.0

    def ids(self) -> set[str]:
        return {record["decision_id"] for record in self.records}


def decode_webhook(receiver: Receiver, body: bytes, headers: dict[str, str]) -> list[dict[str, Any]]:
    from standardwebhooks.webhooks import Webhook

    assert receiver.secret is not None
    payload = Webhook(receiver.secret).verify(body, headers)
    assert payload["type"] == "cavra.decisions"
    return list(payload["data"])


def decode_hec(receiver: Receiver, body: bytes, headers: dict[str, str]) -> list[dict[str, Any]]:
    assert headers.get("Authorization") == f"Splunk {receiver.secret}", "HEC token"
    decoder = json.JSONDecoder()
    text, index, events = body.decode(), 0, []
    while index < len(text):
        while index < len(text) and text[index].isspace():
            index += 1
        if index >= len(text):
            break
        event, index = decoder.raw_decode(text, index)
        assert set(event) >= {"time", "sourcetype", "event"} and isinstance(event["time"], float | int)
        events.append(event["event"])
    return events


def decode_otlp(receiver: Receiver, body: bytes, headers: dict[str, str]) -> list[dict[str, Any]]:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    assert headers.get("Content-Type") == "application/x-protobuf"
    request = ExportLogsServiceRequest()
    request.ParseFromString(body)
    records = []
    for resource in request.resource_logs:
        for scope in resource.scope_logs:
            for log in scope.log_records:
                attributes = {a.key: a.value.string_value for a in log.attributes}
                record = json.loads(log.body.string_value)
                assert attributes["cavra.decision_id"] == record["decision_id"]
                assert log.time_unix_nano > 0
                records.append(record)
    return records


@asynccontextmanager
async def http_receiver(
    decode: Callable[[Receiver, bytes, dict[str, str]], list[dict[str, Any]]], path: str, secret: str | None = None
) -> AsyncIterator[Receiver]:
    receiver = Receiver(url="", secret=secret)

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        receiver.requests += 1
        try:
            records = decode(receiver, body, dict(request.headers))
        except Exception as exc:  # a malformed delivery is a test failure, answered 400
            receiver.problems.append(repr(exc))
            return web.Response(status=400)
        if receiver.delay_s:
            await asyncio.sleep(receiver.delay_s)
        status = receiver.behaviour(receiver.requests, records)
        if 200 <= status < 300:
            receiver.records.extend(records)
            receiver.headers.append(dict(request.headers))
            receiver.arrivals.extend(time.monotonic() for _ in records)
        headers = {"Retry-After": "0"} if status == 429 else None
        return web.Response(status=status, headers=headers)

    app = web.Application(client_max_size=64 * 1024**2)
    app.router.add_post(path, handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    receiver.url = f"http://127.0.0.1:{port}{path}"
    try:
        yield receiver
    finally:
        await asyncio.wait_for(runner.cleanup(), 10)


async def until(condition: Callable[[], bool], timeout_s: float = 20.0, what: str = "condition") -> None:
    """Wait for a condition with a deadline (never sleep-and-hope)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.02)
