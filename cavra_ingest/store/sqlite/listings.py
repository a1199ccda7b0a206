"""How the SQLite store answers a decisions listing: the index it is told to drive by, and search.

SQLite's planner picks low-cardinality indexes and sorts, so a listing names the index that drives it. A
search goes through the trigram index (012) when that narrows enough, else it reads rows newest first.
"""

from __future__ import annotations

from typing import Any

import aiosqlite

from cavra_ingest.core.search import trigrams
from cavra_ingest.store.base import ListQuery
from cavra_ingest.store.sql import DECISION_COLUMNS, SESSION_COLUMNS, SQLITE_SEARCH_TEXT, Listing, Use

# Filters that may drive a decisions listing (and facets) through their index (006), most selective first.
# With none of them the time index drives, and the other filters are tested on its entries, which carry
# the facet and scope fields. The flag says whether several values (IN) may drive.
DECISION_DRIVERS = (("session_id", True), ("correlation_id", True), ("agent_id", True), ("repository", True))
# Order does not matter for a count or facets, so 025's rule index (rule, time, then the facet and scope
# fields) may drive them: a rule's entries, a window a range of them, never the table. It does not drive
# pages: it lacks decision_id, and reading the time index until a page of a rule fills takes ~1 ms at 5 M.
RULE_DRIVER = ("rule_id", True)
DECISION_FACET_DRIVERS = (*DECISION_DRIVERS, RULE_DRIVER)
# And 004's single-column `decision` index may drive a count of outcomes alone (not facets: it lacks
# their fields, so every match would be read from the table).
DECISION_COUNT_DRIVERS = (*DECISION_FACET_DRIVERS, ("decision", True))
# Drivers whose index holds their column alone.
BARE_DRIVERS = frozenset({"decision"})
# The condition of 025's partial rule index: true of every row a rule filter matches.
RULE_INDEX = "idx_activity_decisions_rule"  # 025
RULE_INDEX_TERM = "rule_id IS NOT NULL"
# Rows the trigram index (012) says may match, and every row the background indexer has not reached yet.
SEARCH_CANDIDATES = (
    "rowid IN (SELECT rowid FROM activity_search WHERE activity_search MATCH ? UNION ALL"
    " SELECT rowid FROM activity_decisions WHERE rowid > (SELECT indexed_upto FROM activity_search_progress))"
)


def fts_match(pieces: list[str]) -> str:
    """An FTS5 query that needs every trigram (each quoted as a string)."""
    return " AND ".join('"' + piece.replace('"', '""') + '"' for piece in pieces)


class SteeredListing(Listing):
    """A listing whose driving index SQLite is told, since its planner picks low-cardinality ones and sorts."""

    steered = True

    def __init__(
        self,
        *args: Any,
        drivers: tuple[tuple[str, bool], ...],
        count_drivers: tuple[tuple[str, bool], ...],
        facet_drivers: tuple[tuple[str, bool], ...],
        indexed_search: bool = True,
        pieces: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.drivers = drivers
        self.count_drivers = count_drivers
        self.facet_drivers = facet_drivers
        self.indexed_search = indexed_search
        # The trigrams to look up, when chosen for one query (the rarest); None: all of the terms'.
        self.pieces = pieces

    def search_clauses(self, terms: tuple[str, ...]) -> tuple[list[str], list[Any]]:
        """Narrow to the rows whose indexed text holds every trigram of the terms, plus those not indexed yet."""
        clauses, params = super().search_clauses(terms)
        pieces = self.pieces or trigrams(terms)
        if self.indexed_search and pieces:
            clauses.insert(0, SEARCH_CANDIDATES)
            params.insert(0, fts_match(pieces))
        return clauses, params

    @staticmethod
    def driver(query: ListQuery, drivers: tuple[tuple[str, bool], ...]) -> str | None:
        """Pick the one filter whose index drives the query, or None for the time index."""
        given = dict(query.equals)
        for name, many in drivers:
            values = given.get(name)
            if values and (many or len(values) == 1):
                return name
        return None

    def driving(self, query: ListQuery, use: Use) -> str | None:
        """The filter whose index drives this statement, or None (the time index, or a search's candidates)."""
        if query.terms and self.indexed_search:
            # The search's candidates (at most SEARCH_PROBE_ROWS of them) drive; no filter index may.
            return None
        drivers = {"page": self.drivers, "count": self.count_drivers, "facets": self.facet_drivers}[use]
        driver = self.driver(query, drivers)
        if driver in BARE_DRIVERS and (query.since or query.until or len(query.equals) > 1):
            # 004's `decision` index counts outcomes alone, index-only. With a time range (usually
            # narrower) or other filters (whose values it lacks), the covering time index counts cheaper.
            return None
        return driver

    def unindexed(self, query: ListQuery, use: Use) -> frozenset[str]:
        # One chosen index drives; the other filters are tested on the entries it yields.
        driver = self.driving(query, use)
        return frozenset(name for name, _ in query.equals if name != driver)

    def facets(self, query: ListQuery, fields: tuple[str, ...]) -> tuple[str, list[Any]]:
        if self.driving(query, "facets") != "rule_id":
            return super().facets(query, fields)
        # The rule index covers every facet field: each field grouped straight from its entries costs less
        # than copying the matches out first (250 k of them: ~400 ms against ~480 ms of CPU, six fields). Named,
        # since a field's own index would give its GROUP BY its order and win with statistics of a broad rule.
        where, params = self.where(query, with_position=False, use="facets")
        source = f"{self.table} INDEXED BY {RULE_INDEX}{where}"
        columns = [(name, self.columns[name]) for name in fields]
        arms = [f"SELECT '{name}', {col}, count(*) FROM {source} GROUP BY {col}" for name, col in columns]
        return " UNION ALL ".join(arms), params * len(arms)

    def where(self, query: ListQuery, *, with_position: bool, use: Use = "page") -> tuple[str, list[Any]]:
        where, params = super().where(query, with_position=with_position, use=use)
        if self.driving(query, use) == "rule_id":
            # The rule index is partial on this term, so only a statement that states it may read the index:
            # narrower than the time index, it would otherwise win every full scan (facets, counts).
            where += f" AND {RULE_INDEX_TERM}"
        return where, params


def decision_listing(indexed_search: bool = True, pieces: list[str] | None = None) -> SteeredListing:
    return SteeredListing(
        "activity_decisions",
        DECISION_COLUMNS,
        "timestamp",
        "decision_id",
        drivers=DECISION_DRIVERS,
        count_drivers=DECISION_COUNT_DRIVERS,
        facet_drivers=DECISION_FACET_DRIVERS,
        indexed_search=indexed_search,
        pieces=pieces,
        search_text=SQLITE_SEARCH_TEXT,
    )


DECISIONS = decision_listing()
# A search whose trigrams match many rows is answered by reading rows newest first and checking each: a page
# of it ends early, where the index's candidate set would first be built in full (seconds at 1 M rows).
SCANNED = decision_listing(indexed_search=False)
SEARCH_PROBE_ROWS = 20_000
# Intersecting a trigram that every row holds costs ~100 ms at 5 M rows, a rare one well under 1 ms: each
# trigram's first SEARCH_PROBE_ROWS entries are counted, and the RARE_PIECES rarest drive.
RARE_PIECES = 3
PROBE_SEARCH = "SELECT count(*) FROM (SELECT 1 FROM activity_search WHERE activity_search MATCH ? LIMIT ?)"
# Sessions are few beside decisions: the planner chooses.
SESSIONS = Listing("activity_sessions", SESSION_COLUMNS, "updated_at", "session_id")


async def searching(db: aiosqlite.Connection, query: ListQuery, listing: SteeredListing) -> SteeredListing:
    """Choose how a search is answered: through the trigram index when it narrows enough, else by a scan."""
    if not (query.terms and listing.indexed_search):
        return listing
    pieces = trigrams(query.terms)
    if not pieces:
        return SCANNED
    counted = []
    for piece in pieces:
        rows = list(await db.execute_fetchall(PROBE_SEARCH, (fts_match([piece]), SEARCH_PROBE_ROWS)))
        counted.append((rows[0][0], piece))
    counted.sort()
    if counted[0][0] < SEARCH_PROBE_ROWS:
        return decision_listing(pieces=[piece for _, piece in counted[:RARE_PIECES]])
    # Every trigram is common; together they may still be rare.
    rows = list(await db.execute_fetchall(PROBE_SEARCH, (fts_match(pieces), SEARCH_PROBE_ROWS)))
    return SCANNED if rows[0][0] >= SEARCH_PROBE_ROWS else DECISIONS
