"""The interface every store implements, and the query types and helpers they share."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from cavra_ingest.core.errors import Retryable
from cavra_ingest.core.models import RejectionReply
from cavra_ingest.core.sink import WriteItem, WriteResult
from cavra_ingest.store.dimensions import FACET_FIELDS


class StoreUnavailable(Retryable):
    """A write failed for a reason that may clear (lock, full disk, read-only file)."""


class QueryTimeout(Retryable):
    """A heavy read (export chunk, facets, count) hit its statement time limit or found no free slot in time."""


@dataclass(frozen=True)
class ListQuery:
    """A listing: exact-match filters (OR within a field, AND across), range, page."""

    equals: tuple[tuple[str, tuple[str, ...]], ...] = ()
    since: str | None = None
    until: str | None = None
    min_blocked: int | None = None
    limit: int = 50
    offset: int = 0
    # Keyset position: (time, id) of the last row of the previous page.
    after: tuple[str, str] | None = None
    with_total: bool = True
    oldest_first: bool = False
    # Fields with a prefix value (`repository=acme/*`): (field, exact values, prefixes), OR within the field.
    prefixes: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = ()
    # Free-text search terms (search.py), already folded; every one must match.
    terms: tuple[str, ...] = ()

    @property
    def filtered(self) -> bool:
        """Say whether anything narrows the matches."""
        return bool(self.equals or self.since or self.until or self.prefixes or self.terms)


@dataclass
class Page:
    """A page of stored records as raw JSON, with the total when it was asked for."""

    items: list[bytes]
    total: int | None
    last_key: tuple[str, str] | None = None


# Exact-match filters of the listings, the same on every store; SQL stores map them to columns of the same name.
DECISION_FILTERS = (
    "session_id",
    "agent_id",
    "repository",
    "policy_pack",
    "decision",
    "severity",
    "action_type",
    "tenant_id",
    "workspace_id",
    "rule_id",
    "correlation_id",
)
SESSION_FILTERS = ("agent_id", "repository", "policy_pack", "state", "tenant_id", "workspace_id")

FacetCounts = list[tuple[str | None, int]]


@dataclass
class Facets:
    """Match counts per value of each facet field (top N, most frequent first) and the total."""

    total: int
    fields: dict[str, FacetCounts]


def facets_from_rows(rows: Iterable[Sequence[Any]], top: int) -> Facets:
    """Fold SQL rows of (field, value, count) into ranked facets; the total is the outcomes' sum."""
    counts: dict[str, dict[str | None, int]] = {name: {} for name in FACET_FIELDS}
    for name, value, count in rows:
        counts[name][value] = count
    return Facets(sum(counts["decision"].values()), {name: rank(c, top) for name, c in counts.items()})


async def keyset_chunks(
    list_page: Callable[[ListQuery], Awaitable[Page]], query: ListQuery, chunk_size: int
) -> AsyncIterator[list[bytes]]:
    """Page through every match by keyset, one listing call (and connection use) per chunk."""
    chunk = dataclasses.replace(query, limit=chunk_size, offset=0, after=None, with_total=False)
    while True:
        page = await list_page(chunk)
        if page.items:
            yield page.items
        if len(page.items) < chunk_size or page.last_key is None:
            return
        chunk = dataclasses.replace(chunk, after=page.last_key)


def rank(counts: dict[str | None, int], top: int) -> FacetCounts:
    """Order values as the SQL stores do: count descending, then value ascending with null first."""
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0] is not None, kv[0] or ""))
    return ordered[:top]


class Store(Protocol):
    """A backend: one writer at a time calls `write`; readers may run concurrently."""

    kind: str

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def write(self, items: list[WriteItem]) -> list[WriteResult]: ...

    async def migrate(self) -> list[str]:
        """Apply pending migrations (creating what is missing); return the ids applied now."""
        ...

    async def get_decision(self, decision_id: str) -> bytes | None: ...

    async def get_session(self, session_id: str) -> bytes | None: ...

    async def list_decisions(self, query: ListQuery) -> Page: ...

    async def list_sessions(self, query: ListQuery) -> Page: ...

    async def facets(self, query: ListQuery, top: int) -> Facets: ...

    async def holds(self, table: str, field: str, value: str, within: Mapping[str, str] | None = None) -> bool:
        """Say whether any stored row of `decisions` or `sessions` has this value in this filter field.

        `within` (column -> value, e.g. a bound caller's tenant) confines the look-up to those rows.
        """
        ...

    def iter_decisions(self, query: ListQuery, chunk_size: int) -> AsyncIterator[list[bytes]]:
        """Yield every match in listing order, a chunk at a time (ignores limit and offset)."""
        ...

    async def histogram(self, query: ListQuery, unit_chars: int) -> list[tuple[str, str, int]]:
        """Count matches per (first `unit_chars` characters of the timestamp, outcome)."""
        ...

    async def time_bounds(self, query: ListQuery) -> tuple[str | None, str | None]:
        """Return the earliest and latest timestamp of the matches (None, None when none match)."""
        ...


# Optional features: a store has them or not; the runtime and handlers test with isinstance, never getattr.


@runtime_checkable
class FoldsCounts(Protocol):
    """The decision counts have a backlog a background folder works through (SQLite)."""

    async def fold_counts(self, max_rows: int) -> tuple[int, int | None]:
        """Fold up to `max_rows` uncounted decisions; return (rows still waiting, last rowid counted)."""
        ...


@runtime_checkable
class IndexesSearch(Protocol):
    """Free-text search reads an index a background indexer fills (SQLite's FTS5, PostgreSQL's pg_trgm)."""

    async def index_search(self, max_rows: int) -> tuple[int, int | None]:
        """Index up to `max_rows` new decisions; return (rows still waiting, last rowid indexed or None)."""
        ...


@runtime_checkable
class KeepsRejections(Protocol):
    """Records a JetStream worker refused after their 202 are kept for `GET /ingest/rejections` (PostgreSQL)."""

    async def add_rejections(self, rows: Sequence[tuple[int, int, RejectionReply]]) -> None:
        """Keep (stream sequence, index in the message, rejection) rows; a row kept before is left as it is."""
        ...

    async def rejections(
        self, decision_id: str | None, session_id: str | None, tenant_id: str | None, after: int, limit: int
    ) -> list[tuple[int, RejectionReply]]:
        """Return (stream sequence, rejection) after `after`, oldest first, matching the given fields."""
        ...
