"""Import decisions (and session states) from a CAVRA JSON store, a CAVRA SQLite file, or an NDJSON/CSV export.

Every record goes through the API's validation (`validate.py`) and the writer's `commit`, so the store plans
the batch exactly as for `POST /decisions`: a re-run reports duplicates and changes nothing.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import sqlite3
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from cavra_ingest.core.errors import Problem
from cavra_ingest.core.models import SessionIn
from cavra_ingest.core.progress import Progress
from cavra_ingest.core.sink import WriteItem
from cavra_ingest.core.validate import decode_failure, validate
from cavra_ingest.http.routes.exports import CSV_COLUMNS
from cavra_ingest.runtime import running
from cavra_ingest.settings import Settings

SQLITE_MAGIC = b"SQLite format 3\x00"
# Reasons kept per report: enough to act on, bounded however bad the source is.
MAX_REASONS = 20
JSON_COLUMNS = frozenset({"evidence_refs", "context", "metadata", "labels"})


@dataclass
class ImportReport:
    source: str
    kind: str
    created: int = 0
    duplicate: int = 0
    conflict: int = 0
    rejected: int = 0
    sessions_updated: int = 0
    sessions_rejected: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    def count(self, status: str, reason: str | None = None) -> None:
        setattr(self, status, getattr(self, status) + 1)
        if reason is not None and (reason in self.reasons or len(self.reasons) < MAX_REASONS):
            self.reasons[reason] += 1

    def summary(self) -> str:
        line = (
            f"imported {self.source} ({self.kind}): {self.created} created, {self.duplicate} duplicate, "
            f"{self.conflict} conflict, {self.rejected} rejected; sessions: {self.sessions_updated} states carried, "
            f"{self.sessions_rejected} rejected"
        )
        return "\n".join([line, *(f"  {count} x {reason}" for reason, count in self.reasons.most_common())])


def detect(path: Path) -> str:
    """Name the source's format from its first bytes (and, for CSV, its name)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as source:
        head = source.read(64)
    if head.startswith(SQLITE_MAGIC):
        return "sqlite"
    name = path.name.removesuffix(".gz")
    if name.endswith(".csv"):
        return "csv"
    if head.lstrip()[:1] == b"{" and not name.endswith((".ndjson", ".jsonl")):
        # A JSON store is one object; an NDJSON export is one object per line: a store has "decisions".
        with opener(path, "rb") as source:
            first_line = source.readline()
        try:
            json.loads(first_line)
        except ValueError:
            return "json"
        return "json" if b'"decisions"' in first_line else "ndjson"
    return "ndjson"


def read_json_store(path: Path) -> tuple[Iterator[bytes], list[dict[str, Any]], int]:
    data = json.loads(path.read_bytes())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a JSON store is an object with `decisions` and `sessions`")
    decisions = [item for item in data.get("decisions") or [] if item is not None]
    # Counts and times are refolded from the decisions; only what a client set is carried.
    sessions = [
        {key: item.get(key) for key in ("session_id", "state", "metadata")}
        for item in data.get("sessions") or []
        if isinstance(item, dict)
    ]
    return (msgspec.json.encode(item) for item in decisions), sessions, len(decisions)


def read_sqlite(path: Path) -> tuple[Iterator[bytes], list[dict[str, Any]], int]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    total = int(db.execute("SELECT count(*) FROM activity_decisions").fetchone()[0])
    sessions = [
        {"session_id": row[0], "state": row[1], **session_extra(row[2])}
        for row in db.execute("SELECT session_id, state, payload FROM activity_sessions")
    ]

    def decisions() -> Iterator[bytes]:
        try:
            cursor = db.execute("SELECT payload FROM activity_decisions ORDER BY timestamp, decision_id")
            while rows := cursor.fetchmany(1000):
                for (payload,) in rows:
                    yield payload.encode() if isinstance(payload, str) else payload
        finally:
            db.close()

    return decisions(), sessions, total


def session_extra(payload: str | None) -> dict[str, Any]:
    """Keep the client-set metadata of a stored session summary."""
    try:
        data = json.loads(payload or "{}")
    except ValueError:
        return {}
    metadata = data.get("metadata") if isinstance(data, dict) else None
    return {"metadata": metadata} if isinstance(metadata, dict) else {}


def read_lines(path: Path) -> Iterator[bytes]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as source:
        for line in source:
            if line.strip():
                yield line.rstrip(b"\r\n")


def read_csv(path: Path) -> Iterator[bytes]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as raw:
        reader = csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8", newline=""))
        unknown = set(reader.fieldnames or ()) - set(CSV_COLUMNS)
        if unknown:
            raise ValueError(f"{path}: unknown CSV columns {sorted(unknown)}; expected the export's header")
        for row in reader:
            record: dict[str, Any] = {}
            for column, cell in row.items():
                if cell in ("", None):
                    continue  # an empty cell is a field the export had as null
                record[column] = json.loads(cell) if column in JSON_COLUMNS else cell
            yield msgspec.json.encode(record)


async def import_path(
    path: Path, settings: Settings, progress: Progress | None = None, chunk: int | None = None
) -> ImportReport:
    """Validate and write every record of `path` into the configured store; carry session states after."""
    kind = detect(path)
    sessions: list[dict[str, Any]] = []
    total: int | None = None
    if kind == "sqlite":
        records, sessions, total = read_sqlite(path)
    elif kind == "json":
        records, sessions, total = read_json_store(path)
    elif kind == "csv":
        records = read_csv(path)
    else:
        records = read_lines(path)
    if progress is not None:
        progress.total = total
    report = ImportReport(str(path), kind)
    size = chunk or min(
        settings.writer.commit_max_records, settings.limits.request_max_records, settings.writer.queue_max_records
    )
    async with running(settings) as runtime:
        pending: list[WriteItem] = []
        for raw in records:
            checked = validate(raw, settings.limits.max_record_bytes, check_nul=b"\\u0000" in raw)
            if progress is not None:
                progress.advance()
            if isinstance(checked, Problem):
                report.count("rejected", checked.detail)
            else:
                pending.append(checked)
            if len(pending) >= size:
                await write(runtime.writer, pending, report)
                pending = []
        if pending:
            await write(runtime.writer, pending, report)
        updates: list[WriteItem] = []
        for session in sessions:
            try:
                updates.append(msgspec.convert({k: v for k, v in session.items() if v is not None}, SessionIn))
            except msgspec.ValidationError as exc:
                report.sessions_rejected += 1
                report.reasons[f"session {session.get('session_id')}: {decode_failure(exc).detail}"] += 1
        for start in range(0, len(updates), size):
            results = await runtime.writer.commit(updates[start : start + size])
            report.sessions_updated += sum(result.status != "rejected" for result in results)
            report.sessions_rejected += sum(result.status == "rejected" for result in results)
    return report


async def write(writer: Any, items: list[WriteItem], report: ImportReport) -> None:
    results = await writer.commit(items)
    for result in results:
        if result.status == "conflict":
            report.count("conflict", "decision_id already stored with other content")
        elif result.status == "rejected":
            report.count("rejected", result.body.decode(errors="replace")[:200])
        else:
            report.count("duplicate" if result.status == "duplicate" else "created")
