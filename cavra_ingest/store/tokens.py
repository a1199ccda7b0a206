"""API tokens: random secrets with a scanner-friendly prefix, stored only as SHA-256 hashes in the SQL store.

The JSON store keeps no tokens: it is for local pilots on loopback (docs/security.md says so).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from msgspec import Struct

from cavra_ingest.core.models import new_id, now_text, utc_text
from cavra_ingest.settings import Settings

# Secret scanners (GitHub, gitleaks, trufflehog rules) key on a fixed prefix; the rest is 256 random bits.
PREFIX = "cavra_"
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
SECRET_CHARS = 43  # 62**43 > 2**256
SCOPES = ("ingest", "read", "admin")
SCOPE_ID = re.compile(r"^[A-Za-z0-9_.:-]{3,128}$")
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class TokenError(Exception):
    """A token request that cannot be honoured (bad scope, tenant id, duration, or no SQL store)."""


class Token(Struct, omit_defaults=True):
    """A token as stored and listed: everything but the secret, which is never kept."""

    id: str
    name: str
    scopes: list[str]
    created_at: str
    tenant_id: str | None = None
    workspace_id: str | None = None
    rate_per_s: float | None = None
    expires_at: str | None = None
    revoked_at: str | None = None
    last_used_at: str | None = None
    # Decisions the token may create per UTC day (None: no quota of its own).
    daily_quota: int | None = None

    def usable(self, now: str) -> bool:
        """Say whether the token may authenticate at `now` (not revoked, not expired)."""
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


def new_secret() -> str:
    """Make a secret: the prefix and 43 base62 characters from the OS's CSPRNG."""
    return PREFIX + "".join(secrets.choice(ALPHABET) for _ in range(SECRET_CHARS))


def hash_secret(secret: str) -> str:
    """Hash a secret for storage and look-up; a fast hash suffices for 256 random bits."""
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_duration(text: str) -> timedelta:
    """Read `90d`, `12h`, `30m`, `3600s` or `2w`."""
    match = _DURATION.fullmatch(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise TokenError(f"duration must be a positive number with s, m, h, d or w (e.g. 90d), not {text!r}")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def new_token(
    scopes: Sequence[str],
    *,
    name: str | None = None,
    tenant_id: str | None = None,
    workspace_id: str | None = None,
    expires_in: str | None = None,
    rate_per_s: float | None = None,
    daily_quota: int | None = None,
) -> tuple[Token, str]:
    """Build a checked token record and its secret (not yet stored)."""
    wanted = sorted(set(scopes))
    if not wanted or any(scope not in SCOPES for scope in wanted):
        raise TokenError(f"scopes must be among {', '.join(SCOPES)}, not {', '.join(scopes) or 'none'}")
    for label, value in (("tenant", tenant_id), ("workspace", workspace_id)):
        if value is not None and not SCOPE_ID.fullmatch(value):
            raise TokenError(f"{label} id must match {SCOPE_ID.pattern}, not {value!r}")
    if workspace_id is not None and tenant_id is None:
        raise TokenError("a workspace-bound token needs a tenant too (--tenant)")
    if rate_per_s is not None and not rate_per_s > 0:
        raise TokenError("rate must be a positive number of records per second")
    if daily_quota is not None and daily_quota < 1:
        raise TokenError("daily quota must be a positive number of records per UTC day")
    created = datetime.now(UTC)
    token_id = new_id("tok_")
    token = Token(
        id=token_id,
        name=name or token_id,
        scopes=wanted,
        created_at=utc_text(created),
        tenant_id=tenant_id,
        workspace_id=workspace_id,
        rate_per_s=rate_per_s,
        daily_quota=daily_quota,
        expires_at=utc_text(created + parse_duration(expires_in)) if expires_in else None,
    )
    return token, new_secret()


INSERT_TOKEN = """
INSERT INTO api_tokens (id, name, secret_hash, scopes, tenant_id, workspace_id, rate_per_s, created_at, expires_at,
    daily_quota)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
TOKEN_COLUMNS = (
    "id, name, scopes, created_at, tenant_id, workspace_id, rate_per_s, expires_at, revoked_at, last_used_at,"
    " daily_quota"
)
SELECT_TOKENS = f"SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY created_at, id"
FIND_TOKEN = f"SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE secret_hash = ?"
COUNT_TOKENS = "SELECT count(*) FROM api_tokens"
REVOKE_TOKEN = "UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL"
TOUCH_TOKEN = "UPDATE api_tokens SET last_used_at = ? WHERE id = ?"
# A point read on the primary key (migration 015); the stores add to the row as they create records.
SELECT_USAGE = "SELECT records FROM token_usage WHERE token_id = ? AND day = ?"


def token_from_row(row: Sequence[Any]) -> Token:
    return Token(
        id=row[0],
        name=row[1],
        scopes=row[2].split(),
        created_at=row[3],
        tenant_id=row[4],
        workspace_id=row[5],
        rate_per_s=row[6],
        expires_at=row[7],
        revoked_at=row[8],
        last_used_at=row[9],
        daily_quota=row[10],
    )


def token_row(token: Token, secret_hash: str) -> tuple[Any, ...]:
    return (
        token.id,
        token.name,
        secret_hash,
        " ".join(token.scopes),
        token.tenant_id,
        token.workspace_id,
        token.rate_per_s,
        token.created_at,
        token.expires_at,
        token.daily_quota,
    )


class TokenStore(Protocol):
    """Where tokens live: the `api_tokens` table of the SQL store (migration 008)."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def create(self, token: Token, secret: str) -> None: ...

    async def list(self) -> list[Token]: ...

    async def find(self, secret: str) -> Token | None: ...

    async def count(self) -> int: ...

    async def revoke(self, token_id: str) -> bool: ...

    async def touch(self, token_id: str) -> None: ...

    async def usage(self, token_id: str, day: str) -> int:
        """Return the decisions the token created on this UTC day (`YYYY-MM-DD`), as committed."""
        ...


class SqliteTokens:
    """Tokens in the SQLite file: short-lived connections on a thread, since look-ups are cached."""

    def __init__(self, path: Path, busy_timeout_ms: int = 2000) -> None:
        self.path = path
        self.timeout = busy_timeout_ms / 1000

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def _run(self, sql: str, params: tuple[Any, ...] = (), write: bool = False) -> list[Any] | int:
        conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        try:
            cursor = conn.execute(sql, params)
            return cursor.rowcount if write else cursor.fetchall()
        finally:
            conn.close()

    async def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        rows = await asyncio.to_thread(self._run, sql, params)
        assert isinstance(rows, list)
        return rows

    async def _write(self, sql: str, params: tuple[Any, ...]) -> int:
        changed = await asyncio.to_thread(self._run, sql, params, True)
        assert isinstance(changed, int)
        return changed

    async def create(self, token: Token, secret: str) -> None:
        await self._write(INSERT_TOKEN, token_row(token, hash_secret(secret)))

    async def list(self) -> list[Token]:
        return [token_from_row(row) for row in await self._rows(SELECT_TOKENS)]

    async def find(self, secret: str) -> Token | None:
        rows = await self._rows(FIND_TOKEN, (hash_secret(secret),))
        return token_from_row(rows[0]) if rows else None

    async def count(self) -> int:
        return int((await self._rows(COUNT_TOKENS))[0][0])

    async def revoke(self, token_id: str) -> bool:
        return await self._write(REVOKE_TOKEN, (now_text(), token_id)) > 0

    async def touch(self, token_id: str) -> None:
        await self._write(TOUCH_TOKEN, (now_text(), token_id))

    async def usage(self, token_id: str, day: str) -> int:
        rows = await self._rows(SELECT_USAGE, (token_id, day))
        return int(rows[0][0]) if rows else 0


class PostgresTokens:
    """Tokens in the PostgreSQL schema, through a small pool of their own."""

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

    @staticmethod
    def _sql(sql: str) -> str:
        from cavra_ingest.core.sqltext import numbered

        return numbered(sql)

    async def create(self, token: Token, secret: str) -> None:
        await self._pool.execute(self._sql(INSERT_TOKEN), *token_row(token, hash_secret(secret)))

    async def list(self) -> list[Token]:
        return [token_from_row(tuple(row)) for row in await self._pool.fetch(SELECT_TOKENS)]

    async def find(self, secret: str) -> Token | None:
        row = await self._pool.fetchrow(self._sql(FIND_TOKEN), hash_secret(secret))
        return token_from_row(tuple(row)) if row is not None else None

    async def count(self) -> int:
        return int(await self._pool.fetchval(COUNT_TOKENS))

    async def revoke(self, token_id: str) -> bool:
        status = await self._pool.execute(self._sql(REVOKE_TOKEN), now_text(), token_id)
        return bool(status.endswith(" 1"))

    async def touch(self, token_id: str) -> None:
        await self._pool.execute(self._sql(TOUCH_TOKEN), now_text(), token_id)

    async def usage(self, token_id: str, day: str) -> int:
        return int(await self._pool.fetchval(self._sql(SELECT_USAGE), token_id, day) or 0)


def token_store(settings: Settings) -> TokenStore | None:
    """Return the token store of the settings' store, or None for the JSON store (which keeps none)."""
    if settings.store.kind == "postgres":
        from cavra_ingest.store.postgres.store import schema_name

        return PostgresTokens(settings.store.activity_db or "", schema_name(settings.store.postgres_schema))
    if settings.store.kind == "sqlite":
        return SqliteTokens(settings.store.path, settings.store.sqlite_busy_timeout_ms)
    return None
