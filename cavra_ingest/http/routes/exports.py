"""Exports: every decision matching the listing filters, streamed as NDJSON or CSV."""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
from aiohttp import web

from cavra_ingest.core.models import DecisionRecord
from cavra_ingest.http.guards import cancel_on_disconnect
from cavra_ingest.http.keys import STORE_KEY
from cavra_ingest.http.routes.reads import DECISION_FILTERS, parse_query, stored_values

log = logging.getLogger(__name__)

# Rows per store round trip: memory stays bounded by one chunk whatever the export's size.
CHUNK_ROWS = 1000
# The record's field order, fixed by the model: a stable header for spreadsheets and scripts.
CSV_COLUMNS: tuple[str, ...] = DecisionRecord.__struct_fields__
_DECODER = msgspec.json.Decoder(dict[str, Any])


def ndjson_chunk(payloads: list[bytes]) -> bytes:
    """One stored record per line, exactly as stored."""
    return b"".join(payload + b"\n" for payload in payloads)


# A spreadsheet runs a cell starting with one of these as a formula (OWASP "CSV Injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralize(text: str) -> str:
    """Prefix a would-be formula with a quote, as OWASP recommends, so spreadsheets show it as text."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return neutralize(value)
    # Lists and objects (evidence_refs, context, labels) as compact JSON in one cell.
    return neutralize(msgspec.json.encode(value).decode())


def csv_rows(payloads: list[bytes], columns: tuple[str, ...] = CSV_COLUMNS) -> list[list[str]]:
    """Flatten stored records into rows in `columns` order; fields without a column are left out."""
    rows = []
    for payload in payloads:
        record = _DECODER.decode(payload)
        rows.append([_cell(record.get(column)) for column in columns])
    return rows


def csv_chunk(rows: list[list[str]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue().encode()


async def decision_chunks(request: web.Request) -> AsyncIterator[list[bytes]]:
    """Every decision matching the request's filters, in listing order, a keyset chunk at a time."""
    held = await stored_values(request, "decisions", DECISION_FILTERS)
    query = parse_query(request, DECISION_FILTERS, scope="export", paging=False, held=held, search=True)
    return request.app[STORE_KEY].iter_decisions(query, CHUNK_ROWS)


async def stream(
    request: web.Request,
    content_type: str,
    filename: str,
    head: bytes,
    encode: Callable[[list[bytes]], bytes],
    chunks: AsyncIterator[list[bytes]],
) -> web.StreamResponse:
    """Stream stored records as a download, chunk by chunk (the query was checked before anything is sent)."""
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
        async for payloads in chunks:
            await response.write(encode(payloads))
    except ConnectionError:
        raise  # the client went away; nothing to tell it
    except Exception:
        # The status line is sent: an error body would look like data. Drop the connection without the
        # final chunk, so the client sees a truncated transfer instead of a complete-looking export.
        log.exception("export failed after %s bytes", request.writer.output_size if request.writer else "?")
        if request.transport is not None:
            request.transport.abort()
        return response
    await response.write_eof()
    return response


@cancel_on_disconnect
async def decisions_ndjson(request: web.Request) -> web.StreamResponse:
    chunks = await decision_chunks(request)
    return await stream(request, "application/x-ndjson", "decisions.ndjson", b"", ndjson_chunk, chunks)


@cancel_on_disconnect
async def decisions_csv(request: web.Request) -> web.StreamResponse:
    chunks = await decision_chunks(request)
    head = csv_chunk([list(CSV_COLUMNS)])
    encode = lambda payloads: csv_chunk(csv_rows(payloads))  # noqa: E731
    return await stream(request, "text/csv; charset=utf-8", "decisions.csv", head, encode, chunks)
