"""One sender per sink kind: each takes a batch of decisions and delivers it, or says whether to retry.

A batch holds one stream's events: decisions, or access events (`Event.stream`, shaped in accessevents.py).

`Retry` (429, 5xx, a timeout, a lost connection) is tried again after a backoff; `Refused` (a 4xx that a
retry cannot fix) sends the events to the dead letters. Formats: docs/streaming.md.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import aiohttp
import msgspec

from cavra_ingest.core.sinks import SinkDef
from workers import accessevents

APP_NAME = "cavra-ingest"
# RFC 5612's documentation enterprise number: the structured-data id of the decision's fields.
SD_ID = "cavra@32473"
SD_FIELDS = ("decision_id", "decision", "severity", "session_id", "agent_id", "actor", "repository",
             "action_type", "rule_id", "policy_pack", "tenant_id", "workspace_id", "correlation_id")  # fmt: skip
# session_id and actor travel as the semantic conventions' session.id and enduser.id.
OTEL_FIELDS = tuple(name for name in SD_FIELDS if name not in ("session_id", "actor"))
SEVERITY_SYSLOG = {"critical": 2, "high": 3, "medium": 4, "low": 5}
SEVERITY_OTEL = {"critical": (21, "FATAL"), "high": (17, "ERROR"), "medium": (13, "WARN"), "low": (9, "INFO")}
FACILITY_AUDIT = 13  # RFC 5424 "log audit"


class Retry(Exception):
    """The delivery failed in a way a later try may not: back off (at least `after_s` when given)."""

    def __init__(self, detail: str, after_s: float | None = None) -> None:
        super().__init__(detail)
        self.after_s = after_s


class Refused(Exception):
    """The receiver refused the batch for good (a 4xx other than 408 and 429)."""


@dataclass(frozen=True)
class Event:
    position: tuple[int, int]
    fields: dict[str, Any]
    payload: bytes
    # "decisions" or "access" (accessevents.ACCESS): the stream the event comes from.
    stream: str = "decisions"

    @property
    def at(self) -> str:
        """When it happened: a decision's timestamp, an access event's `at`."""
        return str(self.fields["at" if self.stream == accessevents.ACCESS else "timestamp"])


class Brief(msgspec.Struct):
    """The fields the senders use: decoding only these costs much less than the whole record."""

    decision_id: str
    timestamp: str
    session_id: str | None = None
    decision: str | None = None
    severity: str | None = None
    agent_id: str | None = None
    actor: str | None = None
    repository: str | None = None
    action_type: str | None = None
    target: str | None = None
    rule_id: str | None = None
    policy_pack: str | None = None
    tenant_id: str | None = None
    workspace_id: str | None = None
    correlation_id: str | None = None


BRIEF = msgspec.json.Decoder(Brief)


def brief_fields(payload: bytes) -> dict[str, Any]:
    return msgspec.structs.asdict(BRIEF.decode(payload))


class Sender(Protocol):
    async def send(self, events: Sequence[Event]) -> None: ...

    async def close(self) -> None: ...


def epoch_of(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        try:
            from email.utils import parsedate_to_datetime

            return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
        except (TypeError, ValueError):
            return None


class HttpSender:
    """POST one body per batch; the status says delivered, retry or refused."""

    content_type = "application/json"

    def __init__(self, sink: SinkDef, secret: str | None, timeout_s: float) -> None:
        self.sink = sink
        self.secret = secret
        self.url = self.endpoint(sink.target)
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def endpoint(self, target: str) -> str:
        return target

    def body(self, events: Sequence[Event]) -> bytes:
        raise NotImplementedError

    def headers(self, events: Sequence[Event], body: bytes) -> dict[str, str]:
        return {}

    async def send(self, events: Sequence[Event]) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        body = self.body(events)
        headers = {"Content-Type": self.content_type, "User-Agent": APP_NAME, **self.headers(events, body)}
        status, answer, after = await self.post(self.url, body, headers)
        if 200 <= status < 300:
            await self.taken(answer, headers)
            return
        if status in (408, 429) or status >= 500:
            raise Retry(f"HTTP {status}", after)
        raise Refused(f"HTTP {status}")

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, float | None]:
        assert self._session is not None
        try:
            async with self._session.post(url, data=body, headers=headers) as reply:
                answer = await reply.read()
                return reply.status, answer, retry_after(reply.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise Retry(f"{type(exc).__name__}: {exc}"[:300]) from None

    async def taken(self, answer: bytes, headers: dict[str, str]) -> None:
        """The receiver answered 2xx; a kind that confirms later (HEC's acknowledgements) waits here."""
        return None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class WebhookSender(HttpSender):
    """A JSON batch signed per Standard Webhooks (webhook-id, webhook-timestamp, webhook-signature)."""

    def __init__(self, sink: SinkDef, secret: str | None, timeout_s: float) -> None:
        from standardwebhooks.webhooks import Webhook

        super().__init__(sink, secret, timeout_s)
        self.signer = Webhook(secret or "")

    def body(self, events: Sequence[Event]) -> bytes:
        records = b",".join(event.payload for event in events)
        kind = accessevents.WEBHOOK_TYPE if events[0].stream == accessevents.ACCESS else "cavra.decisions"
        return b'{"type":"' + kind.encode() + b'","data":[' + records + b"]}"

    def headers(self, events: Sequence[Event], body: bytes) -> dict[str, str]:
        hi, lo = events[0].position
        # The same batch re-sent after a crash keeps its id: receivers may drop it by webhook-id too. A replayed
        # dead letter (hi -1) is named by its dead-letter id instead; access events' positions by their stream.
        stream = "access_" if events[0].stream == accessevents.ACCESS else ""
        msg_id = f"msg_{self.sink.name}_{stream}{hi}_{lo}" if hi >= 0 else f"msg_{self.sink.name}_dead_{lo}"
        now = datetime.now(UTC)
        signature = self.signer.sign(msg_id, now, body)
        return {"webhook-id": msg_id, "webhook-timestamp": str(int(now.timestamp())), "webhook-signature": signature}


class SplunkSender(HttpSender):
    """Splunk HTTP Event Collector: one JSON event object per decision, concatenated.

    With `?ack=1` on the target, a channel is sent and each batch counts as delivered only once
    `/services/collector/ack` confirms its ackId (indexer acknowledgement), polled until the timeout.
    """

    ACK_POLL_S = 0.2

    def __init__(self, sink: SinkDef, secret: str | None, timeout_s: float) -> None:
        parts = urlsplit(sink.target)
        self.ack = parse_qs(parts.query).get("ack", [""])[0].lower() in ("1", "true", "yes")
        self.channel = str(uuid.uuid4())
        self.timeout_s = timeout_s
        super().__init__(sink, secret, timeout_s)

    def endpoint(self, target: str) -> str:
        parts = urlsplit(target)
        base = f"{parts.scheme}://{parts.netloc}{parts.path}".rstrip("/")
        self.base = base if parts.path not in ("", "/") else base + "/services/collector"
        return self.base + "/event" if parts.path in ("", "/") else base

    async def taken(self, answer: bytes, headers: dict[str, str]) -> None:
        if not self.ack:
            return
        try:
            ack_id = int(json.loads(answer)["ackId"])
        except (ValueError, KeyError, TypeError):
            raise Retry("HEC answered without an ackId (is indexer acknowledgement on?)") from None
        url = self.base.removesuffix("/event") + "/ack?channel=" + self.channel
        query = json.dumps({"acks": [ack_id]}).encode()
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            status, reply, _ = await self.post(url, query, headers)
            if status == 200:
                try:
                    if json.loads(reply)["acks"].get(str(ack_id)) is True:
                        return
                except (ValueError, KeyError, AttributeError):
                    raise Retry('HEC\'s ack answer is not {"acks": {...}}') from None
            await asyncio.sleep(self.ACK_POLL_S)
        raise Retry(f"HEC did not acknowledge ackId {ack_id} within {self.timeout_s} s")

    def body(self, events: Sequence[Event]) -> bytes:
        # The stored JSON goes in as it is: no decode and encode of each record.
        sourcetype = accessevents.SOURCETYPE if events[0].stream == accessevents.ACCESS else "cavra:decision"
        head = f',"host":{json.dumps(socket.gethostname())},"source":"{APP_NAME}","sourcetype":"{sourcetype}","event":'
        return b"\n".join(b'{"time":%.6f%s%s}' % (epoch_of(event.at), head.encode(), event.payload) for event in events)

    def headers(self, events: Sequence[Event], body: bytes) -> dict[str, str]:
        sent = {"Authorization": f"Splunk {self.secret or ''}"}
        if self.ack:
            sent["X-Splunk-Request-Channel"] = self.channel
        return sent


class OtlpSender(HttpSender):
    """OTLP/HTTP logs in protobuf: one LogRecord per decision."""

    content_type = "application/x-protobuf"

    def endpoint(self, target: str) -> str:
        parts = urlsplit(target)
        return target.rstrip("/") + "/v1/logs" if parts.path in ("", "/") else target

    def body(self, events: Sequence[Event]) -> bytes:
        return otlp_request(events).SerializeToString()


def otlp_request(events: Sequence[Event]) -> Any:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    request = ExportLogsServiceRequest()
    resource = request.resource_logs.add()
    service = resource.resource.attributes.add()
    service.key, service.value.string_value = "service.name", APP_NAME
    scope = resource.scope_logs.add()
    scope.scope.name = APP_NAME
    now = time.time_ns()
    # Filled in place (`add()`): building each message from keyword arguments costs several times more.
    for event in events:
        fields = event.fields
        log = scope.log_records.add()
        log.observed_time_unix_nano = now
        if event.stream == accessevents.ACCESS:
            accessevents.otlp_access(log, fields, event.payload)
            continue
        log.time_unix_nano = int(epoch_of(fields["timestamp"]) * 1e9)
        log.severity_number, log.severity_text = SEVERITY_OTEL.get(str(fields.get("severity")), (9, "INFO"))
        log.body.string_value = event.payload.decode()
        attributes = log.attributes
        pairs = [("event.name", "cavra.decision")]
        if fields.get("session_id"):
            pairs.append(("session.id", str(fields["session_id"])))
        if fields.get("actor"):
            pairs.append(("enduser.id", str(fields["actor"])))
        pairs += [(f"cavra.{name}", str(fields[name])) for name in OTEL_FIELDS if fields.get(name)]
        for key, value in pairs:
            attribute = attributes.add()
            attribute.key = key
            attribute.value.string_value = value
    return request


# The package each kind needs beyond the server's own (the `streaming` extra).
def make_sender(sink: SinkDef, secret: str | None, timeout_s: float) -> Sender:
    if sink.kind == "webhook":
        return WebhookSender(sink, secret, timeout_s)
    if sink.kind == "splunk_hec":
        return SplunkSender(sink, secret, timeout_s)
    if sink.kind == "otlp":
        return OtlpSender(sink, secret, timeout_s)
    from workers.rawsenders import ParquetSender, SyslogSender

    if sink.kind == "syslog":
        return SyslogSender(sink, timeout_s)
    return ParquetSender(sink)
