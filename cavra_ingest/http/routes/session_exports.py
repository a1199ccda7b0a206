"""Exports of the sessions list: every summary matching the listing filters, streamed as NDJSON or CSV."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from cavra_ingest.core.models import SessionRecord
from cavra_ingest.http.guards import cancel_on_disconnect
from cavra_ingest.http.keys import STORE_KEY
from cavra_ingest.http.routes.exports import CHUNK_ROWS, csv_chunk, csv_rows, ndjson_chunk, stream
from cavra_ingest.http.routes.reads import SESSION_FILTERS, parse_query, stored_values
from cavra_ingest.store.base import keyset_chunks

CSV_COLUMNS: tuple[str, ...] = SessionRecord.__struct_fields__


async def session_chunks(request: web.Request) -> AsyncIterator[list[bytes]]:
    """Every summary matching the request's filters, most recently updated first, a keyset chunk at a time."""
    held = await stored_values(request, "sessions", SESSION_FILTERS)
    query = parse_query(
        request, SESSION_FILTERS, scope="session-export", extra=("min_blocked",), paging=False, held=held
    )
    return keyset_chunks(request.app[STORE_KEY].list_sessions, query, CHUNK_ROWS)


@cancel_on_disconnect
async def sessions_ndjson(request: web.Request) -> web.StreamResponse:
    chunks = await session_chunks(request)
    return await stream(request, "application/x-ndjson", "sessions.ndjson", b"", ndjson_chunk, chunks)


@cancel_on_disconnect
async def sessions_csv(request: web.Request) -> web.StreamResponse:
    chunks = await session_chunks(request)
    head = csv_chunk([list(CSV_COLUMNS)])
    encode = lambda payloads: csv_chunk(csv_rows(payloads, CSV_COLUMNS))  # noqa: E731
    return await stream(request, "text/csv; charset=utf-8", "sessions.csv", head, encode, chunks)
