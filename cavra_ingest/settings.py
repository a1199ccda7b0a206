"""Runtime settings, read once from CAVRA_* environment variables."""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_SQLITE_PATH = ".cavra/activity.db"
# Old names still read, with a warning: they sat side by side with opposite meanings.
ALIASES = {"CAVRA_MAX_BATCH_RECORDS": "request_max_records", "CAVRA_BATCH_MAX_RECORDS": "commit_max_records"}
log = logging.getLogger(__name__)
# CAVRA_* variables that are not settings of the server but are read elsewhere (tests, tools).
OTHER_VARIABLES = frozenset(
    {
        "CAVRA_TEST_POSTGRES_URL",
        "CAVRA_REQUIRE_SERVICES",
        "CAVRA_FAULT_ROUNDS",
        "CAVRA_FAULT_SEED",
        "CAVRA_FUZZ_EXAMPLES",
        "CAVRA_BURST_REQUESTS",
        "CAVRA_CHROMIUM",
        "CAVRA_SCREENSHOTS",
        # The client and `send` read these.
        "CAVRA_TOKEN",
        "CAVRA_URL",
    }
)
TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off"})
SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# SQLite's page sizes: powers of two from 512 to 65536.
PAGE_SIZES = frozenset(1 << n for n in range(9, 17))
# Fields that may be 0; every other number must be positive.
# Zero means "none" or "off" for these; every other number must be positive.
MAY_BE_ZERO = frozenset(
    {
        "port",
        "batch_max_wait_ms",
        "sqlite_busy_timeout_ms",
        "sqlite_warm_sessions",
        "retry_after_s",
        "auth_cache_s",
        "quota_cache_s",
        "default_daily_quota",
        "min_free_disk_bytes",
        "max_future_skew_s",
        "max_past_age_s",
    }
)


class SettingsError(ValueError):
    """One or more settings are invalid; each problem is one line naming its variable."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


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
    # The writer's page cache in MiB, or `auto`: sized to the file's random-key indexes (store/cache.py).
    sqlite_cache_mb: str = "auto"
    # The writer's warm-up at open reads the rows and index leaves that this many of the most recently
    # updated sessions (and their agents and repositories) write to; 0: none of them (store/cache.py).
    sqlite_warm_sessions: int = 10_000
    # Page size in bytes of a NEW SQLite file (an existing file keeps its own). 2048 writes ~1/3 less WAL
    # per decision in small transactions, but ~1 KiB records then fill a page each: a larger file and slower
    # reads of many rows (docs/performance.md), so SQLite's default stays.
    sqlite_page_size: int = 4096
    retry_after_s: int = 1
    # `serve` runs on uvloop when it is installed (the `bench` extra): less event-loop CPU per request.
    uvloop: bool = True

    # Schema the PostgreSQL store keeps its tables in.
    postgres_schema: str = "public"
    # `text` for a terminal, `json` for one JSON object per line; one access line per request unless off.
    log_format: str = "text"
    log_level: str = "INFO"
    access_log: bool = True

    # Authentication (docs/security.md): "auto" requires a token once one exists, "required" always.
    auth: str = "auto"
    # Serve without tokens on a non-loopback address (logged loudly at every start).
    insecure_no_auth: bool = False
    # How long a token look-up is reused: revocation and expiry take effect within this time.
    auth_cache_s: float = 1.0
    # A rate-limited token may burst this many seconds' worth of its rate at once.
    rate_burst_s: float = 1.0
    # Daily record quotas (quota.py): how long a token's stored usage is reused before it is read again, and
    # the quota of tokens created without `--daily-quota` (0: none).
    quota_cache_s: float = 1.0
    default_daily_quota: int = 0

    # Exact origins (comma-separated) whose pages may read the API; empty: no CORS (cavra_ingest/cors.py).
    cors_origins: str = ""
    # The API's address as CAVRA's console should call it; empty: the address the request came to.
    api_base_url: str = ""

    # The tamper-evident audit log (docs/audit-log.md): on for the SQL stores; its signing key file (made
    # beside the SQLite file when unset), the checkpoints' origin line, and how often a checkpoint is signed.
    audit_log: bool = True
    signing_key: str | None = None
    audit_log_origin: str = "cavra-ingest/audit-log"
    checkpoint_interval_s: float = 0.5

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

    # Free-text search (search.py): the background trigram indexer (off: `q` reads the rows instead), the rows it
    # indexes per transaction and how often it looks for new ones; the size of a `q`.
    search_index: bool = True
    search_index_batch_rows: int = 20_000
    search_index_interval_s: float = 0.5
    search_max_chars: int = 256
    # The background counts folder (SQLite): decisions per transaction when it folds a backlog the writer's
    # batches leave to it (each step holds the writer: 2,000 kept a post's median at ~0.1 s during the fold,
    # 5,000 at ~0.5 s; bench/upgrade_start.py), and how often it looks.
    counts_fold_rows: int = 2_000
    counts_fold_interval_s: float = 1.0
    search_max_terms: int = 8
    # Buckets one `GET /decisions/histogram` may return (an explicit interval over a longer window is a 400).
    histogram_max_buckets: int = 2000
    # JetStream mode (docs/scale-out.md): `serve` publishes to these comma-separated nats:// servers and
    # answers 202; `cavra-ingest worker` commits. Stream replicas (3 in the compose topology), subject
    # partitions (by a hash of session_id), messages a worker commits per transaction, and how long a
    # publish or a NATS request may take before the request gets a 503.
    broker_url: str = ""
    stream_replicas: int = 1
    stream_partitions: int = 16
    worker_batch_messages: int = 256
    broker_timeout_s: float = 5.0
    # How long a worker may hold fetched messages before JetStream redelivers them to another worker (a
    # worker killed mid-batch delays its messages by this much).
    worker_ack_wait_s: float = 30.0
    # A file the worker touches at least every second while it consumes (a container health check reads it).
    worker_heartbeat_file: str = ""

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
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Build settings from CAVRA_<FIELD> variables, then apply non-None overrides; SettingsError lists problems."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        problems: list[str] = []
        names = variable_names()
        for alias, name in ALIASES.items():
            if env.get(alias) and not env.get(names[name]):
                log.warning("%s is deprecated: use %s", alias, names[name])
        for field in dataclasses.fields(cls):
            variable = names[field.name]
            raw = env.get(variable)
            if not raw and env.get(variable + "_FILE"):
                # Docker and Kubernetes secrets: the value is in a file, never in the environment.
                variable += "_FILE"
                try:
                    raw = Path(env[variable]).read_text().strip()
                except OSError as exc:
                    problems.append(f"{variable}: cannot read {env[variable]!r}: {exc.strerror}")
                    continue
            if not raw:
                aliases = [alias for alias, name in ALIASES.items() if name == field.name and env.get(alias)]
                if aliases:
                    variable, raw = aliases[0], env[aliases[0]]
            if raw is None or raw == "":
                continue
            try:
                values[field.name] = parse(field.default, raw)
            except ValueError as exc:
                problems.append(f"{variable}: {exc}, got {raw!r}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        problems.extend(check(values))
        if problems:
            raise SettingsError(problems)
        return cls(**values)  # type: ignore[arg-type]


def variable_names() -> dict[str, str]:
    """Map each field to its CAVRA_<FIELD> variable."""
    return {field.name: f"CAVRA_{field.name.upper()}" for field in dataclasses.fields(Settings)}


def parse(default: object, raw: str) -> object:
    """Convert a variable's text to its field's type, or raise ValueError saying what was expected."""
    if isinstance(default, bool):
        if raw.lower() in TRUE | FALSE:
            return raw.lower() in TRUE
        raise ValueError("expected one of 1, 0, true, false, yes, no, on, off")
    if isinstance(default, int):
        try:
            return int(raw)
        except ValueError:
            raise ValueError("expected an integer") from None
    if isinstance(default, float):
        try:
            return float(raw)
        except ValueError:
            raise ValueError("expected a number") from None
    return raw


def check(values: Mapping[str, object]) -> list[str]:
    """Return one line per value out of its range."""
    names = variable_names()
    problems: list[str] = []
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if value < 0 or (value == 0 and name not in MAY_BE_ZERO):
            problems.append(f"{names[name]}: expected a {'non-negative' if name in MAY_BE_ZERO else 'positive'} "
                            f"number, got {value!r}")  # fmt: skip
    broker = values.get("broker_url")
    if isinstance(broker, str) and broker:
        for url in broker.split(","):
            if not url.strip().startswith(("nats://", "tls://")):
                problems.append(f"CAVRA_BROKER_URL: expected comma-separated nats:// URLs, got {redact_url(url)!r}")
    cache_mb = values.get("sqlite_cache_mb")
    if isinstance(cache_mb, str):
        from cavra_ingest.store.cache import parse as parse_cache_mb  # the store package imports this module

        try:
            parse_cache_mb(cache_mb)
        except ValueError as exc:
            problems.append(f"{names['sqlite_cache_mb']}: {exc}")
    page_size = values.get("sqlite_page_size")
    if isinstance(page_size, int) and page_size not in PAGE_SIZES:
        problems.append(f"{names['sqlite_page_size']}: expected a power of two from 512 to 65536, got {page_size!r}")
    port = values.get("port")
    if isinstance(port, int) and port > 65535:
        problems.append(f"CAVRA_PORT: expected a port number 0..65535, got {port!r}")
    choices = (
        ("sqlite_synchronous", SYNCHRONOUS),
        ("log_format", LOG_FORMATS),
        ("log_level", LOG_LEVELS),
        ("auth", ("auto", "required")),
    )
    for name, allowed in choices:
        value = values.get(name)
        if value is not None and str(value).upper() not in {choice.upper() for choice in allowed}:
            problems.append(f"{names[name]}: expected one of {', '.join(allowed)}, got {value!r}")
    return problems


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """Describe each CAVRA_* variable that nothing reads, with the closest valid name."""
    env = os.environ if environ is None else environ
    known = set(variable_names().values()) | set(ALIASES) | OTHER_VARIABLES
    known |= {name + "_FILE" for name in variable_names().values()}
    found = []
    for variable in sorted(name for name in env if name.startswith("CAVRA_") and name not in known):
        close = difflib.get_close_matches(variable, sorted(known), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        found.append(f"{variable} is not a cavra-ingest setting and is ignored{hint}")
    return found


# Query parameters libpq and asyncpg accept that carry a secret.
_SECRET_PARAMS = re.compile(
    r"([?&](?:password|passwd|pwd|pass|passfile|sslpassword|sslkey|secret|token)=)[^&#]*", re.IGNORECASE
)


def redact_url(url: str) -> str:
    """Hide every credential form in a database URL: `user:secret@`, `?password=`, `?sslpassword=`."""
    url = re.sub(r"//([^/@?#:]*):[^/@?#]*@", r"//\1:***@", url)
    return _SECRET_PARAMS.sub(r"\1***", url)
