"""The settings, in groups: each with its type, default, one-line help and environment variable, here only.

A group is handed whole to the part that owns it (the writer takes `WriterSettings`, the stores `StoreSettings`).
The variable is `CAVRA_<FIELD>` unless `env` names another; `zero` says 0 is allowed (it means "none" or "off").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cavra_ingest.settings.checks import broker_urls, cache_mb, monitor_urls, page_size, port_number, redact_url

DEFAULT_SQLITE_PATH = ".cavra/activity.db"
SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
AUTH_MODES = ("auto", "required")


def setting(
    default: Any, help: str, *, env: str | None = None, zero: bool = False, choices: tuple[str, ...] = (),
    check: Any = None,
) -> Any:  # fmt: skip
    """Declare one setting (a dataclass field carrying its help, variable and checks)."""
    meta = {"help": help, "env": env, "zero": zero, "choices": choices, "check": check}
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class ServerSettings:
    """The HTTP server: where it listens, its connections, its logs and the answers it gives to browsers."""

    host: str = setting("127.0.0.1", "address to bind")
    port: int = setting(8080, "port to bind (0: any free port)", zero=True, check=port_number)
    # `serve` runs on uvloop when it is installed (the `bench` extra): less event-loop CPU per request.
    uvloop: bool = setting(True, "run on uvloop when it is installed")
    max_connections: int = setting(512, "open connections kept (lowered below the file-descriptor limit)")
    header_read_timeout_s: float = setting(10.0, "seconds a new connection may take to send its request headers")
    body_read_timeout_s: float = setting(30.0, "seconds a request body may take to arrive")
    retry_after_s: int = setting(1, "Retry-After seconds of a 503", zero=True)
    log_format: str = setting("text", "`text` for a terminal, `json` for one object per line", choices=LOG_FORMATS)
    log_level: str = setting("INFO", "least severe level logged", choices=LOG_LEVELS)
    access_log: bool = setting(True, "one access line per request")
    cors_origins: str = setting("", "exact origins (comma-separated) whose pages may read the API; empty: no CORS")
    allowed_hosts: str = setting("", "comma-separated Host header values to accept (DNS rebinding); empty: any")


@dataclass(frozen=True)
class StoreSettings:
    """Where decisions are kept and how the store reads, indexes and counts them."""

    # SPEC §4: a SQLite path (or a postgresql:// URL) in `activity_db` wins over a JSON store path.
    activity_db: str | None = setting(None, f"SQLite file or postgresql:// URL (default {DEFAULT_SQLITE_PATH})")
    activity_store: str | None = setting(None, "JSON store file, used when CAVRA_ACTIVITY_DB is unset")
    postgres_schema: str = setting("public", "schema the PostgreSQL store keeps its tables in")
    sqlite_synchronous: str = setting("FULL", "SQLite's PRAGMA synchronous of the writer", choices=SYNCHRONOUS)
    sqlite_busy_timeout_ms: int = setting(
        2000, "ms a write waits for another process's lock before a retryable 503", zero=True
    )
    sqlite_cache_mb: str = setting("auto", "writer's page cache in MiB, or `auto` (sized to the file)", check=cache_mb)
    sqlite_warm_sessions: int = setting(
        10_000, "most recently updated sessions whose pages the writer reads at open (0: none)", zero=True
    )
    # 2048 writes ~1/3 less WAL per decision in small transactions, but ~1 KiB records then fill a page each: a
    # larger file and slower reads of many rows (docs/performance.md), so SQLite's default stays.
    sqlite_page_size: int = setting(4096, "page size in bytes of a new SQLite file", check=page_size)
    heavy_readers: int = setting(2, "connections for exports, facets and counts, apart from point reads")
    heavy_query_timeout_s: float = setting(30.0, "seconds a heavy read's statement may run")
    search_index: bool = setting(True, "fill the free-text search index in the background (off: `q` scans)")
    search_index_batch_rows: int = setting(20_000, "rows the search indexer indexes per transaction")
    search_index_interval_s: float = setting(0.5, "seconds between the search indexer's looks for new rows")
    # Each fold step holds the writer: 2,000 kept a post's median at ~0.1 s during the fold, 5,000 at ~0.5 s.
    counts_fold_rows: int = setting(2_000, "decisions per transaction when the counts folder folds a backlog")
    counts_fold_interval_s: float = setting(1.0, "seconds between the counts folder's looks for a backlog")

    @property
    def kind(self) -> str:
        """Name the backend chosen by SPEC §4 precedence."""
        if self.activity_db and self.activity_db.startswith(("postgres://", "postgresql://")):
            return "postgres"
        if self.activity_db or not self.activity_store:
            return "sqlite"
        return "json"

    @property
    def path(self) -> Path:
        """Return the file the chosen backend keeps its data in."""
        if self.kind == "json":
            return Path(self.activity_store or "")
        return Path(self.activity_db or DEFAULT_SQLITE_PATH)

    @property
    def label(self) -> str:
        """Say where the data lives, without a database password."""
        if self.kind == "postgres":
            return redact_url(self.activity_db or "")
        return str(self.path)


@dataclass(frozen=True)
class WriterSettings:
    """The batch writer: its queue, its transactions and how long it drains at shutdown."""

    queue_max_records: int = setting(50_000, "records queued for the writer at most; beyond, a retryable 503")
    commit_max_records: int = setting(2000, "records the writer commits in one transaction at most")
    batch_max_wait_ms: float = setting(0.0, "ms the writer waits for more records before a commit", zero=True)
    drain_deadline_s: float = setting(10.0, "seconds queued records may take to commit at shutdown")


@dataclass(frozen=True)
class LimitSettings:
    """Abuse limits (docs/limits.md): each has its test."""

    max_body_bytes: int = setting(8 * 1024 * 1024, "bytes of one request body")
    request_max_records: int = setting(5000, "records one request may carry (413 beyond)")
    max_record_bytes: int = setting(64 * 1024, "bytes of one record")
    max_inflight_body_bytes: int = setting(
        64 * 1024 * 1024, "bytes of bodies read and decoded at once over all requests; beyond, 503 before reading"
    )
    min_free_disk_bytes: int = setting(
        256 * 1024 * 1024, "writes get a 503 while the store's file system has less free space (0: off)", zero=True
    )
    max_future_skew_s: float = setting(300.0, "seconds a timestamp may be ahead of the clock (0: off)", zero=True)
    max_past_age_s: float = setting(0.0, "seconds a timestamp may be behind the clock (0: off)", zero=True)
    search_max_chars: int = setting(256, "characters of one `q`")
    search_max_terms: int = setting(8, "terms of one `q`")
    histogram_max_buckets: int = setting(2000, "buckets one `GET /decisions/histogram` may return")


@dataclass(frozen=True)
class AuthSettings:
    """Tokens (docs/security.md): when they are required, how long a look-up is reused, rates and quotas."""

    mode: str = setting(
        "auto", "`auto`: a token is required once one exists; `required`: always", env="CAVRA_AUTH", choices=AUTH_MODES
    )
    insecure_no_auth: bool = setting(False, "serve a non-loopback address with no token (logged at every start)")
    auth_cache_s: float = setting(1.0, "seconds a token look-up is reused (revocation takes this long)", zero=True)
    rate_burst_s: float = setting(1.0, "seconds' worth of its rate a rate-limited token may burst")
    quota_cache_s: float = setting(1.0, "seconds a token's stored daily usage is reused", zero=True)
    default_daily_quota: int = setting(0, "daily records of a token created without --daily-quota (0: none)", zero=True)


@dataclass(frozen=True)
class AuditSettings:
    """The tamper-evident audit log (docs/audit-log.md), on for the SQL stores."""

    enabled: bool = setting(True, "keep the audit log (SQL stores)", env="CAVRA_AUDIT_LOG")
    signing_key: str | None = setting(None, "checkpoint signing key file (default: beside the SQLite file)")
    audit_log_origin: str = setting("cavra-ingest/audit-log", "origin line of the checkpoints")
    checkpoint_interval_s: float = setting(0.5, "seconds between signed checkpoints while leaves arrive")


@dataclass(frozen=True)
class BrokerSettings:
    """JetStream mode (docs/scale-out.md): `serve` publishes and answers 202, `cavra-ingest worker` commits."""

    broker_url: str = setting("", "comma-separated nats:// servers; empty: the embedded mode", check=broker_urls)
    stream_replicas: int = setting(1, "replicas of the streams (3 in the compose topology)")
    stream_partitions: int = setting(16, "subject partitions, by a hash of session_id")
    worker_batch_messages: int = setting(256, "messages a worker commits per transaction")
    broker_timeout_s: float = setting(5.0, "seconds a publish or a NATS request may take before a 503")
    worker_ack_wait_s: float = setting(30.0, "seconds a worker may hold fetched messages before redelivery")
    worker_heartbeat_file: str = setting("", "file the worker touches at least every second while it consumes")
    broker_monitor_url: str = setting(
        "",
        "comma-separated http:// monitoring addresses of the NATS servers (http_port); read at start-up to warn"
        " unless each one syncs every write (sync_interval: always)",
        check=monitor_urls,
    )


@dataclass(frozen=True)
class ConsoleSettings:
    """What the Activity Explorer console is told."""

    api_base_url: str = setting("", "the API's address as CAVRA's console should call it; empty: the request's")


@dataclass(frozen=True)
class SinkSettings:
    """Streaming to sinks (docs/streaming.md): batching, retries, the lease and the lag threshold."""

    # `process` keeps delivery off the event loop that serves ingest: on a small machine it is the difference.
    sink_delivery: str = setting(
        "process",
        "where `serve` delivers: a child `process`, `inline` on its own loop, or `off`",
        choices=("process", "inline", "off"),
    )
    sink_batch_max: int = setting(500, "events per delivery at most")
    sink_batch_ms: int = setting(200, "ms between a sink's looks for new decisions when caught up")
    sink_timeout_s: float = setting(10.0, "seconds a delivery may take before it counts as failed (retried)")
    sink_backoff_s: float = setting(0.5, "first retry delay in seconds; doubled each time, with jitter")
    sink_backoff_max_s: float = setting(30.0, "longest retry delay in seconds (a Retry-After above it is capped)")
    sink_max_attempts: int = setting(
        50, "attempts before an event that keeps failing goes to the dead letters (0: retry forever)", zero=True
    )
    sink_lease_s: float = setting(15.0, "seconds a process's delivery lease lasts unless renewed")
    sink_lag_alert_s: float = setting(60.0, "lag in seconds over which /healthz names a sink")
    sink_key_file: str = setting("", "key file sealing sink secrets (default: beside the SQLite file)")


def https_or_loopback_url(value: str) -> str | None:
    """An issuer or public URL: https, or http on loopback only (tests, a laptop); empty means unset."""
    if not value:
        return None
    if value.startswith("https://"):
        return None
    if value.startswith(("http://127.", "http://localhost", "http://[::1]")):
        return None
    return "expected an https:// URL (http:// only on loopback)"


@dataclass(frozen=True)
class OidcSettings:
    """OpenID Connect sign-in for people (docs/security.md, "OpenID Connect"); off while the issuer is empty."""

    oidc_issuer: str = setting("", "OpenID provider's issuer URL; empty: no sign-in with a provider",
                               check=https_or_loopback_url)  # fmt: skip
    oidc_client_id: str = setting("", "client id registered at the provider")
    oidc_client_secret: str = setting("", "client secret; empty: a public client (PKCE alone)")
    oidc_roles: str = setting("", "path of the JSON claim → tenant and scopes rules (first match per tenant)")
    public_url: str = setting("", "base URL people reach the server at (the redirect URI's base, behind a proxy)",
                              check=https_or_loopback_url)  # fmt: skip
    oidc_scopes: str = setting("openid email profile groups", "scopes asked of the provider (space-separated)")
    session_idle_s: int = setting(1800, "seconds a sign-in session lasts without a request")
    session_absolute_s: int = setting(43200, "seconds a sign-in session lasts at most")
    oidc_clock_skew_s: int = setting(120, "seconds of clock difference allowed on ID token times", zero=True)
    oidc_pending_login_s: int = setting(600, "seconds a sign-in may take between /auth/login and /auth/callback")
    oidc_pending_logins_max: int = setting(10_000, "sign-ins under way at once at most (more: 503, try again)")
