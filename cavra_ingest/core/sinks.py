"""Streaming sinks: the model and its checks, without I/O (docs/streaming.md).

A sink names a destination (`kind` + `target`), the streams it follows (`events`: the committed decisions, the
access events or both), a filter (the `GET /decisions` query string, for decisions only) and a state.
Its signing secret or HEC token is never part of the model that is listed or logged.
"""

from __future__ import annotations

import base64
import re
import secrets
from urllib.parse import urlsplit

from msgspec import Struct

KINDS = ("webhook", "syslog", "splunk_hec", "otlp", "parquet")
STATES = ("active", "paused")
# The streams a sink may follow: the committed decisions, and the access events (sign-ins, refusals, tokens).
EVENTS = ("decisions", "access")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Kinds whose secret is required (HEC token) or made when left out (the webhook's signing key).
NEEDS_SECRET = frozenset({"splunk_hec"})
MAKES_SECRET = frozenset({"webhook"})
WEBHOOK_PREFIX = "whsec_"


class SinkError(ValueError):
    """A sink definition that cannot be accepted; the message names the field."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(detail)
        self.field = field


class SinkDef(Struct, omit_defaults=True):
    """A sink as stored and listed (the secret is kept apart, encrypted)."""

    name: str
    kind: str
    target: str
    created_at: str
    filter: str = ""
    state: str = "active"
    tenant_id: str | None = None
    has_secret: bool = False
    events: tuple[str, ...] = ("decisions",)


class SinkStatus(Struct):
    """What `GET /sinks/{name}` shows: the definition and its delivery's progress."""

    name: str
    kind: str
    target: str
    filter: str
    state: str
    tenant_id: str | None
    created_at: str
    delivered: int
    failed: int
    dead_letters: int
    lag_records: int
    lag_seconds: float
    last_error: str | None
    last_success_at: float | None
    events: tuple[str, ...] = ("decisions",)
    # The access events' own cursor (`delivered` and `lag_records` count decisions).
    access_delivered: int = 0
    access_lag_records: int = 0


class DeadLetter(Struct):
    id: int
    # The decision's id, or for an access event (`stream` "access") the event's id.
    decision_id: str
    error: str
    attempts: int
    dead_at: str
    record: object = None
    stream: str = "decisions"


def check_name(name: object) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise SinkError("name", "name must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return name


def check_kind(kind: object) -> str:
    if kind not in KINDS:
        raise SinkError("kind", f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    assert isinstance(kind, str)
    return kind


def check_target(kind: str, target: object) -> str:
    """Refuse a target its kind cannot deliver to: an http(s) URL, tcp:// or tls:// host:port, a folder."""
    if not isinstance(target, str) or not target or len(target) > 2048 or any(ord(c) < 32 for c in target):
        raise SinkError("target", "target must be a non-empty string")
    if kind == "parquet":
        if "://" in target:
            raise SinkError("target", "a parquet target is a folder path, not a URL")
        return target
    schemes = ("tcp", "tls") if kind == "syslog" else ("http", "https")
    try:
        parts = urlsplit(target)
        port = parts.port
    except ValueError:
        raise SinkError("target", "target is not a valid URL") from None  # not echoed: it may hold a secret
    if parts.username is not None or parts.password is not None:
        # A target is shown in GET /sinks and in errors; a credential belongs in `secret`, stored sealed.
        raise SinkError("target", "a target URL carries no credentials: give the token or signing key as `secret`")
    if parts.scheme not in schemes or not parts.hostname:
        raise SinkError("target", f"a {kind} target is a {' or '.join(s + '://' for s in schemes)} URL with a host")
    if kind == "syslog" and (port is None or parts.path not in ("", "/")):
        raise SinkError("target", "a syslog target is tcp://host:port or tls://host:port")
    return target


def check_secret(kind: str, secret: object) -> str | None:
    """Return the secret to keep (made for a webhook when left out); refuse one of the wrong form."""
    if secret is None or secret == "":
        if kind in NEEDS_SECRET:
            raise SinkError("secret", f"a {kind} sink needs its token in `secret`")
        return new_webhook_secret() if kind in MAKES_SECRET else None
    if not isinstance(secret, str) or len(secret) > 1024:
        raise SinkError("secret", "secret must be a string")
    if kind == "webhook":
        raw = secret.removeprefix(WEBHOOK_PREFIX)
        try:
            key = base64.b64decode(raw, validate=True)
        except ValueError:
            raise SinkError("secret", "a webhook secret is whsec_ followed by base64 (Standard Webhooks)") from None
        if not 24 <= len(key) <= 64:
            raise SinkError("secret", "a webhook secret's key must be 24 to 64 bytes")
    return secret


def new_webhook_secret() -> str:
    """A Standard Webhooks signing secret: `whsec_` and 32 random bytes in base64."""
    return WEBHOOK_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def check_events(events: object) -> tuple[str, ...]:
    """The streams a sink follows, in the order of EVENTS: a non-empty list of its names, each once."""
    if not isinstance(events, list) or not events or not all(isinstance(e, str) for e in events):
        raise SinkError("events", f"events is a non-empty list of {', '.join(EVENTS)}")
    unknown = [e for e in events if e not in EVENTS]
    if unknown:
        raise SinkError("events", f"events are {', '.join(EVENTS)}, not {unknown[0]!r}")
    return tuple(e for e in EVENTS if e in events)


def check_filter_streams(filter_: str, events: tuple[str, ...]) -> None:
    """A filter selects decisions: on a sink that follows no decisions it would mean nothing, so it is refused."""
    if filter_ and "decisions" not in events:
        raise SinkError("filter", "a filter selects decisions; a sink of access events only takes none")


def check_state(state: object) -> str:
    if state not in STATES:
        raise SinkError("state", f"state must be one of {', '.join(STATES)}, not {state!r}")
    assert isinstance(state, str)
    return state


# The package each kind's sender needs beyond the base install (the `streaming` extra).
PACKAGES = {"webhook": "standardwebhooks", "otlp": "opentelemetry.proto", "parquet": "pyarrow"}


def missing_package(kind: str) -> str | None:
    """Name the package a kind needs that is not installed, if any."""
    import importlib.util

    name = PACKAGES.get(kind)
    try:
        found = name is None or importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        found = False
    return None if found else name
