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

    # Free-text search (search.py): the background trigram indexer (off: `q` reads the rows instead), the rows it
    # indexes per transaction and how often it looks for new ones; the size of a `q`.
    search_index: bool = True
    search_index_batch_rows: int = 20_000
    search_index_interval_s: float = 0.5
    search_max_chars: int = 256
    search_max_terms: int = 8
    # Buckets one `GET /decisions/histogram` may return (an explicit interval over a longer window is a 400).
    histogram_max_buckets: int = 2000

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
            return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", self.activity_db or "")
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
