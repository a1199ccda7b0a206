"""Runtime settings, read once from CAVRA_* environment variables."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_SQLITE_PATH = ".cavra/activity.db"
# Old names still read, with a warning: they sat side by side with opposite meanings.
ALIASES = {"CAVRA_MAX_BATCH_RECORDS": "request_max_records", "CAVRA_BATCH_MAX_RECORDS": "commit_max_records"}
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settings:
    """Everything the app needs to start; CLI flags override the environment."""

    host: str = "127.0.0.1"
    port: int = 8080
    # SPEC §4: a SQLite path in `activity_db` wins over a JSON store path in `activity_store`.
    activity_db: str | None = None
    activity_store: str | None = None
    max_body_bytes: int = 8 * 1024 * 1024
    # Records one request may carry (413 beyond), and records the writer commits in one transaction.
    request_max_records: int = 5000
    max_record_bytes: int = 64 * 1024
    queue_max_records: int = 50_000
    commit_max_records: int = 2000
    batch_max_wait_ms: float = 0.0
    drain_deadline_s: float = 10.0
    body_read_timeout_s: float = 30.0
    sqlite_synchronous: str = "FULL"
    # How long a write waits for another process's lock before the batch gets a retryable 503.
    sqlite_busy_timeout_ms: int = 2000
    retry_after_s: int = 1
    # `serve` runs on uvloop when it is installed (the `bench` extra): less event-loop CPU per request.
    uvloop: bool = True

    # Schema the PostgreSQL store keeps its tables in.
    postgres_schema: str = "public"

    # Abuse limits (docs/limits.md): each has its test.
    # Bytes of request bodies being read and decoded at once, over all requests; beyond it 503 before reading.
    max_inflight_body_bytes: int = 64 * 1024 * 1024
    # Heavy reads (exports, facets, counts) run on their own connections, this many at a time, each
    # statement stopped after `heavy_query_timeout_s`; point reads and pages keep the other readers.
    heavy_readers: int = 2
    heavy_query_timeout_s: float = 30.0
    # Open connections the server keeps (lowered below the process's file-descriptor limit), and how long
    # a new connection may take to send its request headers.
    max_connections: int = 512
    header_read_timeout_s: float = 10.0
    # Writes are refused with 503 while the store's file system has less free space than this.
    min_free_disk_bytes: int = 256 * 1024 * 1024
    # Client timestamps further than this in the future are a 422; older than `max_past_age_s` too (0: off).
    max_future_skew_s: float = 300.0
    max_past_age_s: float = 0.0
    # Comma-separated Host header values to accept (DNS rebinding); empty accepts any.
    allowed_hosts: str = ""

    @property
    def store_kind(self) -> str:
        """Name the backend chosen by SPEC §4 precedence."""
        if self.activity_db and self.activity_db.startswith(("postgres://", "postgresql://")):
            return "postgres"
        if self.activity_db or not self.activity_store:
            return "sqlite"
        return "json"

    @property
    def store_path(self) -> Path:
        """Return the file the chosen backend keeps its data in."""
        if self.store_kind == "json":
            return Path(self.activity_store or "")
        return Path(self.activity_db or DEFAULT_SQLITE_PATH)

    @property
    def store_label(self) -> str:
        """Say where the data lives, without a database password."""
        if self.store_kind == "postgres":
            return redact_url(self.activity_db or "")
        return str(self.store_path)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> Settings:
        """Build settings from CAVRA_<FIELD> variables, then apply non-None overrides."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        names = {field.name: f"CAVRA_{field.name.upper()}" for field in dataclasses.fields(cls)}
        for alias, name in ALIASES.items():
            if env.get(alias) and not env.get(names[name]):
                log.warning("%s is deprecated: use %s", alias, names[name])
        for field in dataclasses.fields(cls):
            raw = env.get(names[field.name])
            if not raw:
                raw = next((env.get(alias) for alias, name in ALIASES.items() if name == field.name), None)
            if raw is None or raw == "":
                continue
            default = field.default
            if isinstance(default, bool):
                values[field.name] = raw.lower() in {"1", "true", "yes", "on"}
            elif isinstance(default, int):
                values[field.name] = int(raw)
            elif isinstance(default, float):
                values[field.name] = float(raw)
            else:
                values[field.name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)  # type: ignore[arg-type]
        if settings.sqlite_synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise ValueError(
                f"CAVRA_SQLITE_SYNCHRONOUS must be OFF, NORMAL, FULL or EXTRA, not {settings.sqlite_synchronous!r}"
            )
        return settings


# Query parameters libpq and asyncpg accept that carry a secret.
_SECRET_PARAMS = re.compile(r"([?&](?:password|passfile|sslpassword|sslkey)=)[^&#]*", re.IGNORECASE)


def redact_url(url: str) -> str:
    """Hide every credential form in a database URL: `user:secret@`, `?password=`, `?sslpassword=`."""
    url = re.sub(r"//([^/@?#:]*):[^/@?#]*@", r"//\1:***@", url)
    return _SECRET_PARAMS.sub(r"\1***", url)
