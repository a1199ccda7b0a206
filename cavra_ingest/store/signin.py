"""Sign-in sessions of people, sign-ins under way, and the access events: SQLite and PostgreSQL (022, 023).

A session is found by the hash of its cookie; neither the cookie nor its CSRF token is kept in clear.
Times of sessions are epoch seconds (REAL), compared in SQL with the idle and absolute lifetimes.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from msgspec import Struct

from cavra_ingest.core.models import now_text
from cavra_ingest.settings import Settings

EVENT_KINDS = ("sign-in", "sign-out", "refusal", "session-expired", "backchannel-logout", "token-created",
               "token-revoked")  # fmt: skip


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return secrets.token_urlsafe(32)


class SigninSession(Struct, omit_defaults=True):
    sub: str
    scopes: list[str]
    created_s: float
    seen_s: float
    sid: str | None = None
    email: str | None = None
    tenant_id: str | None = None
    workspace_id: str | None = None
    csrf_hash: str = ""


class AccessEvent(Struct, omit_defaults=True):
    kind: str
    outcome: str
    at: str = ""
    id: int | None = None
    sub: str | None = None
    email: str | None = None
    remote: str | None = None
    tenant_id: str | None = None
    detail: str | None = None


_SESSION_COLUMNS = "sub, scopes, created_s, seen_s, sid, email, tenant_id, workspace_id, csrf_hash"
INSERT_SESSION = f"INSERT INTO signin_sessions (id_hash, {_SESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
FIND_SESSION = f"SELECT {_SESSION_COLUMNS} FROM signin_sessions WHERE id_hash = ? AND ended_s IS NULL"
SEEN_SESSION = "UPDATE signin_sessions SET seen_s = ? WHERE id_hash = ? AND ended_s IS NULL"
END_SESSION = "UPDATE signin_sessions SET ended_s = ?, end_reason = ? WHERE id_hash = ? AND ended_s IS NULL"
END_BY_SUB = "UPDATE signin_sessions SET ended_s = ?, end_reason = ? WHERE sub = ? AND ended_s IS NULL"
END_BY_SID = "UPDATE signin_sessions SET ended_s = ?, end_reason = ? WHERE sid = ? AND ended_s IS NULL"
_EVENT_COLUMNS = "kind, outcome, at, sub, email, remote, tenant_id, detail"
INSERT_EVENT = f"INSERT INTO access_events ({_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
LIST_EVENTS = f"SELECT id, {_EVENT_COLUMNS} FROM access_events WHERE id < ? ORDER BY id DESC LIMIT ?"
LIST_TENANT_EVENTS = (
    f"SELECT id, {_EVENT_COLUMNS} FROM access_events WHERE tenant_id = ? AND id < ? ORDER BY id DESC LIMIT ?"
)
NO_CURSOR = 2**62
PRUNE_LOGINS = "DELETE FROM signin_logins WHERE created_s < ?"
COUNT_LOGINS = "SELECT count(*) FROM signin_logins"
INSERT_LOGIN = "INSERT INTO signin_logins (state_hash, binding_hash, created_s) VALUES (?, ?, ?)"
# One statement: of two replicas handed the same callback, only one gets the row (a state is used once).
TAKE_LOGIN = "DELETE FROM signin_logins WHERE state_hash = ? RETURNING binding_hash, created_s"


def session_row(session: SigninSession) -> tuple[Any, ...]:
    return (session.sub, " ".join(session.scopes), session.created_s, session.seen_s, session.sid, session.email,
            session.tenant_id, session.workspace_id, session.csrf_hash)  # fmt: skip


def session_from_row(row: Sequence[Any]) -> SigninSession:
    sub, scopes, created, seen, sid, email, tenant, workspace, csrf = row
    return SigninSession(sub, scopes.split(), float(created), float(seen), sid, email, tenant, workspace, csrf)


def event_row(event: AccessEvent) -> tuple[Any, ...]:
    return (event.kind, event.outcome, event.at or now_text(), event.sub, event.email, event.remote,
            event.tenant_id, event.detail)  # fmt: skip


def event_from_row(row: Sequence[Any]) -> AccessEvent:
    id_, kind, outcome, at, sub, email, remote, tenant, detail = row
    return AccessEvent(kind, outcome, at, int(id_), sub, email, remote, tenant, detail)


class SigninStore(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def _execute(self, sql: str, params: tuple[Any, ...]) -> int: ...

    async def _fetch(self, sql: str, params: tuple[Any, ...]) -> list[Sequence[Any]]: ...


class Signins:
    """The operations, over either database (`_execute` and `_fetch` are the database's)."""

    backend: SigninStore

    def __init__(self, backend: SigninStore) -> None:
        self.backend = backend

    async def open(self) -> None:
        await self.backend.open()

    async def close(self) -> None:
        await self.backend.close()

    async def create(self, session: SigninSession) -> tuple[str, str]:
        """Store a new session; return its cookie value and CSRF token (shown once, kept hashed)."""
        cookie, csrf = new_secret(), new_secret()
        session.csrf_hash = digest(csrf)
        await self.backend._execute(INSERT_SESSION, (digest(cookie), *session_row(session)))
        return cookie, csrf

    async def find(self, cookie: str) -> SigninSession | None:
        rows = await self.backend._fetch(FIND_SESSION, (digest(cookie),))
        return session_from_row(rows[0]) if rows else None

    async def seen(self, cookie: str, now: float) -> None:
        await self.backend._execute(SEEN_SESSION, (now, digest(cookie)))

    async def end(self, cookie: str, now: float, reason: str) -> bool:
        return await self.backend._execute(END_SESSION, (now, reason, digest(cookie))) > 0

    async def end_person(self, now: float, reason: str, *, sub: str | None, sid: str | None) -> int:
        """End the sessions of a provider's session id (`sid`), else of a person (`sub`); return how many."""
        if sid:
            return await self.backend._execute(END_BY_SID, (now, reason, sid))
        if sub:
            return await self.backend._execute(END_BY_SUB, (now, reason, sub))
        return 0

    async def begin_login(self, state: str, binding: str, now: float, ttl_s: float, most: int) -> bool:
        """Keep a sign-in under way (hashes only), after dropping stale ones; False when `most` are under way."""
        await self.backend._execute(PRUNE_LOGINS, (now - ttl_s,))
        rows = await self.backend._fetch(COUNT_LOGINS, ())
        if int(rows[0][0]) >= most:
            return False
        await self.backend._execute(INSERT_LOGIN, (digest(state), digest(binding), now))
        return True

    async def take_login(self, state: str, now: float, ttl_s: float) -> str | None:
        """Use up a sign-in under way: the hash of its login cookie, or None (unknown, used or stale)."""
        rows = await self.backend._fetch(TAKE_LOGIN, (digest(state),))
        if not rows or now - float(rows[0][1]) > ttl_s:
            return None
        return str(rows[0][0])

    async def record(self, event: AccessEvent) -> None:
        await self.backend._execute(INSERT_EVENT, event_row(event))

    async def events(self, tenant_id: str | None, before: int | None = None, limit: int = 100) -> list[AccessEvent]:
        """The newest events first (before the id `before`); a tenant's only when `tenant_id` is given."""
        cursor = NO_CURSOR if before is None else before
        if tenant_id is None:
            rows = await self.backend._fetch(LIST_EVENTS, (cursor, limit))
        else:
            rows = await self.backend._fetch(LIST_TENANT_EVENTS, (tenant_id, cursor, limit))
        return [event_from_row(row) for row in rows]


class SqliteSignins:
    """Short-lived connections on a thread: sign-ins are rare beside reads."""

    def __init__(self, path: Path, busy_timeout_ms: int = 2000) -> None:
        self.path = path
        self.timeout = busy_timeout_ms / 1000

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def _run(self, sql: str, params: tuple[Any, ...], write: bool) -> Any:
        conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        try:
            cursor = conn.execute(sql, params)
            return cursor.rowcount if write else cursor.fetchall()
        finally:
            conn.close()

    async def _execute(self, sql: str, params: tuple[Any, ...]) -> int:
        return int(await asyncio.to_thread(self._run, sql, params, True))

    async def _fetch(self, sql: str, params: tuple[Any, ...]) -> list[Sequence[Any]]:
        rows: list[Sequence[Any]] = await asyncio.to_thread(self._run, sql, params, False)
        return rows


class PostgresSignins:
    """A small pool of its own in the store's schema."""

    def __init__(self, dsn: str, schema: str) -> None:
        self.dsn = dsn
        self.schema = schema
        self._pool: Any = None

    async def open(self) -> None:
        import asyncpg

        self._pool = await asyncpg.create_pool(
            self.dsn, min_size=1, max_size=2, server_settings={"search_path": self.schema}
        )

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _execute(self, sql: str, params: tuple[Any, ...]) -> int:
        from cavra_ingest.core.sqltext import numbered

        status = await self._pool.execute(numbered(sql), *params)
        return int(status.rsplit(" ", 1)[-1]) if status[-1:].isdigit() else 0

    async def _fetch(self, sql: str, params: tuple[Any, ...]) -> list[Sequence[Any]]:
        from cavra_ingest.core.sqltext import numbered

        return [tuple(row) for row in await self._pool.fetch(numbered(sql), *params)]


def signin_store(settings: Settings) -> Signins | None:
    """The sign-in store beside the data store; None for the JSON store (which keeps no sessions)."""
    if settings.store.kind == "postgres":
        from cavra_ingest.store.postgres.store import schema_name

        dsn = settings.store.activity_db or ""
        return Signins(PostgresSignins(dsn, schema_name(settings.store.postgres_schema)))
    if settings.store.kind == "sqlite":
        return Signins(SqliteSignins(settings.store.path, settings.store.sqlite_busy_timeout_ms))
    return None
