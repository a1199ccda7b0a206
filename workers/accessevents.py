"""Each sink kind's shape of an access event (a sign-in, sign-out, refusal, session expiry, token created or
revoked), beside the decisions' shapes in senders.py and rawsenders.py. Formats: docs/streaming.md.

An event is the `GET /access-events` item: id, kind, outcome, at, sub, email, remote, tenant_id, detail. It holds
no secret (a token is named by its id), and receivers drop duplicates by its `id`.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

ACCESS = "access"
# RFC 5612's documentation enterprise number, as the decisions' SD-ID, with a name of its own.
SD_ID = "cavra-access@32473"
SD_FIELDS = ("id", "kind", "outcome", "sub", "email", "remote", "tenant_id")
# Refused or failed access is worth a look (syslog warning, OTLP WARN); the rest is notice (INFO).
NOTABLE = frozenset({"refusal"})
FAILED_OUTCOMES = frozenset({"failed", "no-role"})
SOURCETYPE = "cavra:access"
EVENT_NAME = "cavra.access"
WEBHOOK_TYPE = "cavra.access"
PARQUET_FOLDER = "access"
PARQUET_COLUMNS = ("kind", "outcome", "at", "sub", "email", "remote", "tenant_id", "detail")


def notable(fields: dict[str, Any]) -> bool:
    return fields.get("kind") in NOTABLE or fields.get("outcome") in FAILED_OUTCOMES


def syslog_access(fields: dict[str, Any], payload: bytes, hostname: str, app: str, facility: int) -> bytes:
    """RFC 5424 with MSGID `access` and its own SD-ID; the event's JSON is the message."""
    from workers.rawsenders import sd_escape

    params = " ".join(f'{name}="{sd_escape(str(fields[name]))}"' for name in SD_FIELDS if fields.get(name))
    stamp = datetime.fromisoformat(fields["at"]).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    pri = facility * 8 + (4 if notable(fields) else 5)
    return f"<{pri}>1 {stamp} {hostname} {app} {os.getpid()} access [{SD_ID} {params}] ".encode() + payload


def otlp_access(log: Any, fields: dict[str, Any], payload: bytes) -> None:
    """Fill a LogRecord: the semantic conventions' user.id, user.email and client.address where they fit."""
    log.time_unix_nano = int(datetime.fromisoformat(fields["at"]).timestamp() * 1e9)
    log.severity_number, log.severity_text = (13, "WARN") if notable(fields) else (9, "INFO")
    log.body.string_value = payload.decode()
    pairs = [("event.name", EVENT_NAME), ("cavra.access.id", str(fields["id"])),
             ("cavra.access.kind", str(fields["kind"])), ("cavra.access.outcome", str(fields["outcome"]))]  # fmt: skip
    for name, key in (("sub", "user.id"), ("email", "user.email"), ("remote", "client.address"),
                      ("tenant_id", "cavra.tenant_id")):  # fmt: skip
        if fields.get(name):
            pairs.append((key, str(fields[name])))
    for key, value in pairs:
        attribute = log.attributes.add()
        attribute.key = key
        attribute.value.string_value = value


def parquet_access_table(fields: list[dict[str, Any]], payloads: list[bytes]) -> Any:
    import pyarrow as pa

    columns = {"id": pa.array([f["id"] for f in fields], pa.int64())}
    for name in PARQUET_COLUMNS:
        columns[name] = pa.array([f.get(name) for f in fields], pa.string())
    columns["record"] = pa.array([p.decode() for p in payloads], pa.string())
    return pa.table(columns)
