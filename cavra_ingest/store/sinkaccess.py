"""The access events as a sink's second stream (migrations 022, 024): the statements and the events' payload.

The payload is the event as `GET /access-events` shows it. SQLite: ids in commit order (one writer at a time).
PostgreSQL: (transaction id, id) read below the snapshot's xmin, so an event committing late is never skipped.
A tenant sink's statement names its tenant: another tenant's events are never read for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from cavra_ingest.store.signin import event_from_row

Position = tuple[int, int]
COLUMNS = "id, kind, outcome, at, sub, email, remote, tenant_id, detail"
PG_HORIZON = "pg_snapshot_xmin(pg_current_snapshot())::text::bigint"


def access_statement(
    what: str, postgres: bool, position: Position, tenant_id: str | None, limit: int
) -> tuple[str, tuple[Any, ...]]:
    """The statement and its parameters: `after` (a batch), `end` (the newest position) or `lag` (a count)."""
    if what == "end":
        if postgres:
            newest = " ORDER BY stream_xid DESC, id DESC LIMIT 1"
            return f"SELECT stream_xid, id FROM access_events WHERE stream_xid < {PG_HORIZON}{newest}", ()
        return "SELECT 0, max(id) FROM access_events", ()
    if postgres:
        tenant = " AND tenant_id = $4" if tenant_id is not None else ""
        after = "(stream_xid, id) > ($1, $2)"
        params: tuple[Any, ...] = (position[0], position[1], limit)
        if what == "after":
            sql = (
                f"SELECT stream_xid, {COLUMNS} FROM access_events WHERE {after} AND stream_xid < {PG_HORIZON}{tenant}"
                " ORDER BY stream_xid, id LIMIT $3"
            )
        else:
            sql = f"SELECT count(*) FROM (SELECT 1 FROM access_events WHERE {after}{tenant} LIMIT $3) AS t"
        return sql, params + ((tenant_id,) if tenant_id is not None else ())
    tenant = " AND tenant_id = ?" if tenant_id is not None else ""
    params = (position[1], *((tenant_id,) if tenant_id is not None else ()), limit)
    if what == "after":
        return f"SELECT 0, {COLUMNS} FROM access_events WHERE id > ?{tenant} ORDER BY id LIMIT ?", params
    return f"SELECT count(*) FROM (SELECT 1 FROM access_events WHERE id > ?{tenant} LIMIT ?)", params


def access_rows(rows: Sequence[Sequence[Any]]) -> list[tuple[Position, bytes]]:
    """(position, the event's JSON) of each row of an `after` statement."""
    return [((int(row[0]), int(row[1])), msgspec.json.encode(event_from_row(tuple(row[1:])))) for row in rows]
