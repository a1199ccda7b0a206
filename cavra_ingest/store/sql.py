"""SQL that both SQL stores share: statements with `?` parameters, row mappers, and listing queries."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

import msgspec

from cavra_ingest.core.models import ENCODER, SESSION_SCHEMA, Accepted, SessionRecord, StateChange
from cavra_ingest.core.search import SEARCH_PAYLOAD_FIELDS, like_pattern, upper_bound
from cavra_ingest.store.base import DECISION_FILTERS, SESSION_FILTERS, ListQuery

INSERT_DECISION = """
INSERT INTO activity_decisions (
    decision_id, session_id, agent_id, actor, repository, policy_pack, action_type, target,
    rule_id, decision, severity, timestamp, correlation_id, payload, tenant_id, workspace_id
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
# A token's created records per UTC day (015), added in the transaction that creates them.
ADD_TOKEN_USAGE = """
INSERT INTO token_usage (token_id, day, records) VALUES (?, ?, ?)
ON CONFLICT (token_id, day) DO UPDATE SET records = token_usage.records + excluded.records
"""
UPSERT_SESSION = """
INSERT INTO activity_sessions (
    session_id, agent_id, actor, repository, policy_pack, state, started_at, updated_at,
    decision_count, blocked_count, approval_required_count, payload, tenant_id, workspace_id
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (session_id) DO UPDATE SET
    agent_id = excluded.agent_id, actor = excluded.actor, repository = excluded.repository,
    policy_pack = excluded.policy_pack, state = excluded.state, started_at = excluded.started_at,
    updated_at = excluded.updated_at, decision_count = excluded.decision_count,
    blocked_count = excluded.blocked_count, approval_required_count = excluded.approval_required_count,
    payload = excluded.payload, tenant_id = excluded.tenant_id, workspace_id = excluded.workspace_id
"""
# The columns session_from_row reads, in its order.
SESSION_SELECT_COLUMNS = """session_id, agent_id, actor, repository, policy_pack, state, started_at, updated_at,
       decision_count, blocked_count, approval_required_count, tenant_id, workspace_id, payload"""
SELECT_DECISION = "SELECT payload FROM activity_decisions WHERE decision_id = ?"
SELECT_SESSION = "SELECT payload FROM activity_sessions WHERE session_id = ?"

# Query arguments map to columns through these allow-lists only.
DECISION_COLUMNS = {name: name for name in DECISION_FILTERS}
SESSION_COLUMNS = {name: name for name in SESSION_FILTERS}
# What a listing statement is for: its driving index may differ (SteeredListing.unindexed).
Use = Literal["page", "count", "facets"]
TABLES = {"decisions": ("activity_decisions", DECISION_COLUMNS), "sessions": ("activity_sessions", SESSION_COLUMNS)}


def holds_sql(table: str, field: str, within: Iterable[str] = ()) -> str:
    """Return a statement finding one row with `field = ?` and each `within` column `= ?` after it.

    Table and columns come from the allow-lists; `within` confines the look-up to a bound caller's tenant.
    """
    name, columns = TABLES[table]
    where = " AND ".join(f"{columns[column]} = ?" for column in (field, *within))
    return f"SELECT 1 FROM {name} WHERE {where} LIMIT 1"


# SQLite's expression for a row's searchable text (search.SEARCH_FIELDS, joined by newlines); payload fields
# count only when they are strings, and a payload that is not JSON (CAVRA may write anything) adds nothing.
SQLITE_SEARCH_TEXT = (
    "(coalesce(target, '') || char(10) || coalesce(rule_id, '') || char(10) || CASE WHEN json_valid(payload) THEN "
    + " || char(10) || ".join(
        f"coalesce(CASE json_type(payload, '$.{name}') WHEN 'text' THEN json_extract(payload, '$.{name}') END, '')"
        for name in SEARCH_PAYLOAD_FIELDS
    )
    + " ELSE '' END)"
)
# PostgreSQL's: the IMMUTABLE function of migration 012, whose trigram index answers ILIKE.
POSTGRES_SEARCH_TEXT = "cavra_search_text(target, rule_id, payload)"


class Listing:
    """How one table is listed: its filter columns, time and id columns, and order."""

    # SQLite's listing puts `+` on filters that must not drive (see `unindexed`), prefix ranges included.
    steered = False

    def __init__(
        self,
        table: str,
        columns: dict[str, str],
        time_column: str,
        id_column: str,
        *,
        search_text: str | None = None,
        like: str = "LIKE",
    ) -> None:
        self.table = table
        self.columns = columns
        self.time_column = time_column
        self.id_column = id_column
        self.search_text = search_text
        self.like = like

    def search_clauses(self, terms: tuple[str, ...]) -> tuple[list[str], list[Any]]:
        """Return one condition per term on the row's search text; stores narrow by their index first."""
        if self.search_text is None:
            raise ValueError(f"{self.table} cannot be searched")
        clauses = [f"{self.search_text} {self.like} ? ESCAPE '\\'" for _ in terms]
        return clauses, [like_pattern(term) for term in terms]

    def prefix_clauses(self, query: ListQuery) -> tuple[list[str], list[Any]]:
        """Return a condition per prefixed field: its exact values or index ranges, any of them."""
        clauses: list[str] = []
        params: list[Any] = []
        for name, exact, prefixes in query.prefixes:
            column = ("+" if self.steered else "") + self.columns[name]
            options = []
            if exact:
                options.append(f"{column} IN ({', '.join('?' * len(exact))})")
                params.extend(exact)
            for prefix in prefixes:
                bound = upper_bound(prefix)
                if bound is None:
                    options.append(f"{column} >= ?")
                    params.append(prefix)
                else:
                    options.append(f"({column} >= ? AND {column} < ?)")
                    params.extend([prefix, bound])
            clauses.append("(" + " OR ".join(options) + ")")
        return clauses, params

    def unindexed(self, query: ListQuery, use: Use) -> frozenset[str]:
        """Name the filters whose index must not drive this query (none: the planner chooses).

        `use`: a page (read in time order), a count (histogram and bounds too) or facets."""
        return frozenset()

    def where(self, query: ListQuery, *, with_position: bool, use: Use = "page") -> tuple[str, list[Any]]:
        """Build the WHERE clause from allow-listed columns and bound parameters."""
        clauses: list[str] = []
        params: list[Any] = []
        unindexed = self.unindexed(query, use)
        for name, values in query.equals:
            # Unary + keeps SQLite from using this column's index (and then sorting every match).
            column = ("+" if name in unindexed else "") + self.columns[name]
            if len(values) == 1:
                clauses.append(f"{column} = ?")
            else:
                clauses.append(f"{column} IN ({', '.join('?' * len(values))})")
            params.extend(values)
        if query.since is not None:
            clauses.append(f"{self.time_column} >= ?")
            params.append(query.since)
        if query.until is not None:
            clauses.append(f"{self.time_column} < ?")
            params.append(query.until)
        if query.min_blocked is not None:
            clauses.append("blocked_count >= ?")
            params.append(query.min_blocked)
        if with_position and query.after is not None:
            # The first term bounds the index range; the second settles rows with the same time.
            time_column, id_column = self.time_column, self.id_column
            if query.oldest_first:
                clauses.append(f"{time_column} >= ? AND ({time_column} > ? OR {id_column} > ?)")
            else:
                clauses.append(f"{time_column} <= ? AND ({time_column} < ? OR {id_column} > ?)")
            params.extend([query.after[0], query.after[0], query.after[1]])
        if query.prefixes:
            found, args = self.prefix_clauses(query)
            clauses.extend(found)
            params.extend(args)
        if query.terms:
            found, args = self.search_clauses(query.terms)
            clauses.extend(found)
            params.extend(args)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def select(self, query: ListQuery) -> tuple[str, list[Any]]:
        where, params = self.where(query, with_position=True)
        direction = "ASC" if query.oldest_first else "DESC"
        sql = (
            f"SELECT {self.time_column}, {self.id_column}, payload FROM {self.table}{where}"
            f" ORDER BY {self.time_column} {direction}, {self.id_column} ASC LIMIT ?"
        )
        params.append(query.limit)
        if query.after is None and query.offset:
            sql += " OFFSET ?"
            params.append(query.offset)
        return sql, params

    def count(self, query: ListQuery) -> tuple[str, list[Any]]:
        where, params = self.where(query, with_position=False, use="count")
        return f"SELECT count(*) FROM {self.table}{where}", params

    def facets(self, query: ListQuery, fields: tuple[str, ...]) -> tuple[str, list[Any]]:
        """Count matches per value of each field in one statement: rows of (field, value, count)."""
        columns = [(name, self.columns[name]) for name in fields]
        if not query.filtered:
            # No filter: each field's own index (004) is read in order, index-only.
            arms = [f"SELECT '{name}', {col}, count(*) FROM {self.table} GROUP BY {col}" for name, col in columns]
            return " UNION ALL ".join(arms), []
        # One pass over the matches, then grouped per field: a GROUP BY per field on the table would tempt
        # the planner to walk that field's index in full, row by row.
        where, params = self.where(query, with_position=False, use="facets")
        picked = ", ".join(col for _, col in columns)
        arms = [f"SELECT '{name}', {col}, count(*) FROM matches GROUP BY {col}" for name, col in columns]
        sql = f"WITH matches AS MATERIALIZED (SELECT {picked} FROM {self.table}{where}) " + " UNION ALL ".join(arms)
        return sql, params

    def histogram(self, query: ListQuery, unit_chars: int) -> tuple[str, list[Any]]:
        """Count matches per (time text cut to `unit_chars` characters, outcome)."""
        where, params = self.where(query, with_position=False, use="count")
        bucket = f"substr({self.time_column}, 1, {int(unit_chars)})"
        sql = f"SELECT {bucket}, decision, count(*) FROM {self.table}{where} GROUP BY 1, 2"
        return sql, params

    def bounds(self, query: ListQuery) -> tuple[str, list[Any]]:
        """Select the earliest and latest time of the matches."""
        where, params = self.where(query, with_position=False, use="count")
        return f"SELECT min({self.time_column}), max({self.time_column}) FROM {self.table}{where}", params


def decision_row(item: Accepted) -> tuple[Any, ...]:
    """Return INSERT_DECISION's parameters for one record."""
    r = item.record
    return (
        r.decision_id,
        r.session_id,
        r.agent_id,
        r.actor,
        r.repository,
        r.policy_pack,
        r.action_type,
        r.target,
        r.rule_id,
        r.decision,
        r.severity,
        r.timestamp,
        r.correlation_id,
        item.payload.decode(),
        r.tenant_id,
        r.workspace_id,
    )


def session_row(s: SessionRecord) -> tuple[Any, ...]:
    """Return UPSERT_SESSION's parameters for one summary."""
    return (
        s.session_id,
        s.agent_id,
        s.actor,
        s.repository,
        s.policy_pack,
        s.state,
        s.started_at,
        s.updated_at,
        s.decision_count,
        s.blocked_count,
        s.approval_required_count,
        ENCODER.encode(s).decode(),
        s.tenant_id,
        s.workspace_id,
    )


def session_from_row(row: Sequence[Any]) -> SessionRecord:
    """Read a summary from SESSION_SELECT_COLUMNS; columns win, payload adds what has no column."""
    # The payload may come from CAVRA itself, with other keys or none of ours.
    try:
        extra = msgspec.json.decode(row[13])
    except (msgspec.DecodeError, TypeError):
        extra = {}
    if not isinstance(extra, dict):
        extra = {}
    refs = extra.get("evidence_refs")
    return SessionRecord(
        schema_version=SESSION_SCHEMA,
        session_id=row[0],
        agent_id=row[1],
        actor=row[2],
        repository=row[3] or "local",
        policy_pack=row[4],
        state=row[5],
        started_at=row[6],
        updated_at=row[7],
        decision_count=row[8],
        blocked_count=row[9],
        approval_required_count=row[10],
        tenant_id=row[11],
        workspace_id=row[12],
        evidence_refs=sorted({str(ref) for ref in refs}) if isinstance(refs, list) else [],
        last_decision_id=extra.get("last_decision_id"),
        metadata=extra.get("metadata") if isinstance(extra.get("metadata"), dict) else None,
        state_history=state_history(extra.get("state_history")),
    )


def state_history(value: Any) -> list[StateChange] | None:
    """Read a stored state history; one this service did not write is dropped, not trusted."""
    try:
        return msgspec.convert(value, list[StateChange] | None)
    except msgspec.ValidationError:
        return None
