"""Exports of the sessions list: every summary matching the listing filters, streamed as NDJSON or CSV."""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web

from .export import CHUNK_ROWS, csv_chunk, csv_rows, ndjson_chunk
from .keys import STORE_KEY
from .models import SessionRecord
from .reads import SESSION_FILTERS, parse_query
from .store.base import keyset_chunks

log = logging.getLogger(__name__)
CSV_COLUMNS: tuple[str, ...] = SessionRecord.__struct_fields__


async def stream(
    request: web.Request, content_type: str, filename: str, head: bytes, encode: Callable[[list[bytes]], bytes]
) -> web.StreamResponse:
    """Stream every matching summary, most recently updated first, in keyset chunks."""
    query = parse_query(request, SESSION_FILTERS, scope="session-export", extra=("min_blocked",), paging=False)
    response = web.StreamResponse(
        headers={
            "Content-Type": content_type,
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
        }
    )
    await response.prepare(request)
    try:
        if head:
            await response.write(head)
        async for payloads in keyset_chunks(request.app[STORE_KEY].list_sessions, query, CHUNK_ROWS):
            await response.write(encode(payloads))
    except ConnectionError:
        raise
    except Exception:
        # As export.stream: a truncated transfer, never an error body that looks like data.
        log.exception("session export failed")
        if request.transport is not None:
            request.transport.abort()
        return response
    await response.write_eof()
    return response


async def sessions_ndjson(request: web.Request) -> web.StreamResponse:
    return await stream(request, "application/x-ndjson", "sessions.ndjson", b"", ndjson_chunk)


async def sessions_csv(request: web.Request) -> web.StreamResponse:
    return await stream(
        request,
        "text/csv; charset=utf-8",
        "sessions.csv",
        csv_chunk([list(CSV_COLUMNS)]),
        lambda payloads: csv_chunk(csv_rows(payloads, CSV_COLUMNS)),
    )
