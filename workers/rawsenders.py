"""The senders that are not HTTP: syslog (RFC 5424 over TCP or TLS, octet-counted) and the Parquet archive."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cavra_ingest.core.sinks import SinkDef
from workers import accessevents
from workers.senders import APP_NAME, FACILITY_AUDIT, SD_FIELDS, SD_ID, SEVERITY_SYSLOG, Event, Retry


def sd_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def syslog_message(event: Event, hostname: str) -> bytes:
    """One RFC 5424 message: the decision's fields as structured data, its JSON as the message."""
    fields = event.fields
    if event.stream == accessevents.ACCESS:
        return accessevents.syslog_access(fields, event.payload, hostname, APP_NAME, FACILITY_AUDIT)
    severity = SEVERITY_SYSLOG.get(str(fields.get("severity")), 6)
    if fields.get("decision") == "block" and severity > 4:
        severity = 4
    params = " ".join(f'{name}="{sd_escape(str(fields[name]))}"' for name in SD_FIELDS if fields.get(name))
    stamp = datetime.fromisoformat(fields["timestamp"]).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    pri = FACILITY_AUDIT * 8 + severity
    head = f"<{pri}>1 {stamp} {hostname} {APP_NAME} {os.getpid()} decision [{SD_ID} {params}] "
    return head.encode() + event.payload


class SyslogSender:
    """RFC 5424 over TCP with octet counting (RFC 6587), or over TLS (RFC 5425): `tls://host:port?ca=FILE`."""

    def __init__(self, sink: SinkDef, timeout_s: float) -> None:
        parts = urlsplit(sink.target)
        self.host, self.port = parts.hostname or "", parts.port or 0
        self.tls: ssl.SSLContext | None = None
        if parts.scheme == "tls":
            ca = parse_qs(parts.query).get("ca", [None])[0]
            self.tls = ssl.create_default_context(cafile=ca)
        self.timeout_s = timeout_s
        self.hostname = socket.gethostname()[:255] or "-"
        self._writer: asyncio.StreamWriter | None = None

    async def send(self, events: Sequence[Event]) -> None:
        frames = []
        for event in events:
            message = syslog_message(event, self.hostname)
            frames.append(str(len(message)).encode() + b" " + message)
        try:
            async with asyncio.timeout(self.timeout_s):
                if self._writer is None or self._writer.is_closing():
                    _, self._writer = await asyncio.open_connection(self.host, self.port, ssl=self.tls)
                self._writer.write(b"".join(frames))
                await self._writer.drain()
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            await self.close()
            raise Retry(f"{type(exc).__name__}: {exc}"[:300]) from None

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            try:
                async with asyncio.timeout(2):
                    await self._writer.wait_closed()
            except (OSError, TimeoutError, ssl.SSLError):
                pass
            self._writer = None


PARQUET_COLUMNS = ("decision_id", "session_id", "timestamp", "decision", "severity", "agent_id", "actor",
                   "repository", "action_type", "target", "rule_id", "policy_pack", "tenant_id", "workspace_id",
                   "correlation_id")  # fmt: skip
NO_TENANT = "__HIVE_DEFAULT_PARTITION__"


class ParquetSender:
    """A daily archive: `tenant=T/date=YYYY-MM-DD/part-<position>.parquet`, written whole then renamed; the
    access events are a dataset of their own beside it, `access/tenant=T/date=YYYY-MM-DD/part-<position>.parquet`.

    The part is named by the batch's first position: a batch re-sent after a crash starts at the same
    position and replaces the part instead of adding a duplicate.
    """

    def __init__(self, sink: SinkDef) -> None:
        self.root = Path(sink.target)

    async def send(self, events: Sequence[Event]) -> None:
        try:
            await asyncio.to_thread(self._write, events)
        except OSError as exc:
            raise Retry(f"{type(exc).__name__}: {exc}"[:300]) from None

    def _write(self, events: Sequence[Event]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        groups: dict[tuple[str, str], list[Event]] = {}
        for event in events:
            tenant = str(event.fields.get("tenant_id") or NO_TENANT)
            day = datetime.fromisoformat(event.at).astimezone(UTC).date().isoformat()
            groups.setdefault((tenant, day), []).append(event)
        hi, lo = events[0].position
        access = events[0].stream == accessevents.ACCESS
        root = self.root / accessevents.PARQUET_FOLDER if access else self.root
        for (tenant, day), group in groups.items():
            folder = root / f"tenant={tenant}" / f"date={day}"
            folder.mkdir(parents=True, exist_ok=True)
            if access:
                table = accessevents.parquet_access_table([e.fields for e in group], [e.payload for e in group])
            else:
                columns: dict[str, list[Any]] = {name: [e.fields.get(name) for e in group] for name in PARQUET_COLUMNS}
                columns["record"] = [e.payload.decode() for e in group]
                table = pa.table({name: pa.array(values, pa.string()) for name, values in columns.items()})
            # A replayed dead letter (hi -1) gets a part of its own, named by its dead-letter id.
            final = folder / (f"part-{hi:020d}-{lo:020d}.parquet" if hi >= 0 else f"part-dead-{lo:020d}.parquet")
            temp = folder / f".{final.name}.tmp"
            pq.write_table(table, temp)
            with open(temp, "rb") as written:
                os.fsync(written.fileno())
            os.replace(temp, final)
            fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    async def close(self) -> None:
        return None
