"""The JSON file store for local pilots: CAVRA's `{"decisions": [...], "sessions": [...]}` shape."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import msgspec

from cavra_ingest.core.compat import utc_or_same, without_nulls
from cavra_ingest.core.models import ENCODER, SESSION_SCHEMA, SessionRecord
from cavra_ingest.core.planning import decision_ids, plan_batch, session_ids
from cavra_ingest.core.search import prefix_matches, text_matches
from cavra_ingest.core.sink import WriteItem, WriteResult
from cavra_ingest.core.summary import empty_session
from cavra_ingest.settings import Settings
from cavra_ingest.store.base import FACET_FIELDS, Facets, ListQuery, Page, StoreUnavailable, rank

FILE_DECODER = msgspec.json.Decoder(dict[str, list[dict[str, Any]]])


def _session_from_dict(data: dict[str, Any]) -> SessionRecord:
    # Lenient: a file written by CAVRA may lack fields this service adds, or hold null for absent ones.
    defaults = msgspec.to_builtins(empty_session("", ""))
    known = {key: value for key, value in without_nulls(data).items() if key in defaults}
    for key in ("started_at", "updated_at"):
        known[key] = utc_or_same(known.get(key, ""))
    return msgspec.convert({**defaults, **known, "schema_version": SESSION_SCHEMA}, SessionRecord)


def _decision_from_dict(data: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    # CAVRA keeps times as sent (`...Z`, other offsets): normalised here, as the SQLite 007 does, so
    # ranges and order compare instants. The record is otherwise served as CAVRA wrote it.
    timestamp = data.get("timestamp")
    normal = utc_or_same(timestamp) if isinstance(timestamp, str) else ""
    if normal != timestamp:
        data = {**data, "timestamp": normal}
    return data, ENCODER.encode(data)


def write_atomically(path: Path, data: bytes) -> None:
    """Write a temp file, fsync it, rename it over the old one, fsync the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class JsonStore:
    """Everything in memory, the whole file rewritten atomically per batch."""

    kind = "json"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._decisions: dict[str, tuple[dict[str, Any], bytes]] = {}
        self._sessions: dict[str, SessionRecord] = {}
        self._lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> JsonStore:
        return cls(settings.store.path)

    async def migrate(self) -> list[str]:
        """Nothing to migrate: the file keeps CAVRA's shape."""
        return []

    async def open(self) -> None:
        if not self.path.exists():
            return
        raw = await asyncio.to_thread(self.path.read_bytes)
        if not raw.strip():
            return
        data = FILE_DECODER.decode(raw)
        for decision in data.get("decisions", []):
            if isinstance(decision.get("decision_id"), str):
                self._decisions[decision["decision_id"]] = _decision_from_dict(decision)
        for session in data.get("sessions", []):
            record = _session_from_dict(session)
            self._sessions[record.session_id] = record

    async def close(self) -> None:
        return None

    async def write(self, items: list[WriteItem]) -> list[WriteResult]:
        """Plan the batch, persist the resulting file, and only then change memory."""
        async with self._lock:
            stored = {key: self._decisions[key][1] for key in decision_ids(items) if key in self._decisions}
            # Copies, so a failed file write leaves the summaries in memory untouched.
            sessions = {
                key: msgspec.structs.replace(self._sessions[key]) for key in session_ids(items) if key in self._sessions
            }
            plan = plan_batch(items, stored, sessions)
            new_decisions = dict(self._decisions)
            for item in plan.inserts:
                new_decisions[item.record.decision_id] = (msgspec.to_builtins(item.record), item.payload)
            new_sessions = {**self._sessions, **plan.sessions}
            body = b"".join(
                [
                    b'{"decisions":[',
                    b",".join(payload for _, payload in new_decisions.values()),
                    b'],"sessions":[',
                    b",".join(ENCODER.encode(s) for s in new_sessions.values()),
                    b"]}",
                ]
            )
            try:
                await asyncio.to_thread(write_atomically, self.path, body)
            except OSError as exc:
                raise StoreUnavailable(str(exc)) from exc
            self._decisions = new_decisions
            self._sessions = new_sessions
            return plan.results

    async def get_decision(self, decision_id: str) -> bytes | None:
        found = self._decisions.get(decision_id)
        return found[1] if found else None

    async def get_session(self, session_id: str) -> bytes | None:
        found = self._sessions.get(session_id)
        return ENCODER.encode(found) if found else None

    async def holds(self, table: str, field: str, value: str, within: Mapping[str, str] | None = None) -> bool:
        wanted = {field: value, **(within or {})}
        if table == "sessions":
            return any(all(getattr(s, k, None) == v for k, v in wanted.items()) for s in self._sessions.values())
        return any(all(fields.get(k) == v for k, v in wanted.items()) for fields, _ in self._decisions.values())

    async def list_decisions(self, query: ListQuery) -> Page:
        rows = [(fields, payload) for fields, payload in self._decisions.values()]
        return _page(rows, query, "timestamp", "decision_id")

    async def list_sessions(self, query: ListQuery) -> Page:
        rows = [(msgspec.to_builtins(s), ENCODER.encode(s)) for s in self._sessions.values()]
        return _page(rows, query, "updated_at", "session_id")

    async def facets(self, query: ListQuery, top: int) -> Facets:
        """Count matches per facet field in one pass over the records in memory."""
        counters: dict[str, Counter[str | None]] = {name: Counter() for name in FACET_FIELDS}
        total = 0
        for fields, _ in self._decisions.values():
            if matches(fields, query, "timestamp"):
                total += 1
                for name, counter in counters.items():
                    counter[fields.get(name)] += 1
        return Facets(total, {name: rank(dict(counter), top) for name, counter in counters.items()})

    async def histogram(self, query: ListQuery, unit_chars: int) -> list[tuple[str, str, int]]:
        counts: Counter[tuple[str, str]] = Counter()
        for fields, _ in self._decisions.values():
            if matches(fields, query, "timestamp"):
                counts[(str(fields.get("timestamp") or "")[:unit_chars], str(fields.get("decision")))] += 1
        return [(bucket, outcome, n) for (bucket, outcome), n in counts.items()]

    async def time_bounds(self, query: ListQuery) -> tuple[str | None, str | None]:
        times = [
            fields.get("timestamp") or ""
            for fields, _ in self._decisions.values()
            if matches(fields, query, "timestamp")
        ]
        return (min(times), max(times)) if times else (None, None)

    async def iter_decisions(self, query: ListQuery, chunk_size: int) -> AsyncIterator[list[bytes]]:
        """Yield matches from one sorted snapshot (references to the stored bytes, no copies)."""
        rows = _sorted_hits(list(self._decisions.values()), query, "timestamp", "decision_id")
        for start in range(0, len(rows), chunk_size):
            yield [payload for _, payload in rows[start : start + chunk_size]]
            # Let other requests run between chunks of a large export.
            await asyncio.sleep(0)


def matches(fields: dict[str, Any], query: ListQuery, time_key: str) -> bool:
    """Apply the same filter semantics as the SQL stores to one record."""
    for name, values in query.equals:
        if fields.get(name) not in values:
            return False
    moment = fields.get(time_key) or ""
    if query.since is not None and moment < query.since:
        return False
    if query.until is not None and moment >= query.until:
        return False
    for name, exact, prefixes in query.prefixes:
        if not prefix_matches(fields.get(name), exact, prefixes):
            return False
    if query.terms and not text_matches(fields, query.terms):
        return False
    return query.min_blocked is None or int(fields.get("blocked_count") or 0) >= query.min_blocked


Row = tuple[dict[str, Any], bytes]


def _sorted_hits(rows: list[Row], query: ListQuery, time_key: str, id_key: str) -> list[Row]:
    hits = [row for row in rows if matches(row[0], query, time_key)]
    # Two stable sorts give "time (desc or asc), then id ascending", as the SQL ORDER BY.
    hits.sort(key=lambda row: row[0][id_key])
    hits.sort(key=lambda row: row[0][time_key], reverse=not query.oldest_first)
    return hits


def _page(rows: list[Row], query: ListQuery, time_key: str, id_key: str) -> Page:
    hits = _sorted_hits(rows, query, time_key, id_key)
    total = len(hits) if query.with_total else None
    if query.after is not None:
        after_time, after_id = query.after
        if query.oldest_first:
            hits = [r for r in hits if (r[0][time_key], r[0][id_key]) > (after_time, after_id)]
        else:
            hits = [
                r
                for r in hits
                if r[0][time_key] < after_time or (r[0][time_key] == after_time and r[0][id_key] > after_id)
            ]
        page = hits[: query.limit]
    else:
        page = hits[query.offset : query.offset + query.limit]
    last_key = (page[-1][0][time_key], page[-1][0][id_key]) if page else None
    return Page([payload for _, payload in page], total, last_key)
