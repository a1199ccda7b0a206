"""Checks of single values beyond their type, and the redaction of URLs; each check returns a problem or None."""

from __future__ import annotations

import re

# SQLite's page sizes: powers of two from 512 to 65536.
PAGE_SIZES = frozenset(1 << n for n in range(9, 17))
# Query parameters libpq and asyncpg accept that carry a secret.
_SECRET_PARAMS = re.compile(
    r"([?&](?:password|passwd|pwd|pass|passfile|sslpassword|sslkey|secret|token)=)[^&#]*", re.IGNORECASE
)


def redact_url(url: str) -> str:
    """Hide every credential form in a database URL: `user:secret@`, `?password=`, `?sslpassword=`."""
    url = re.sub(r"//([^/@?#:]*):[^/@?#]*@", r"//\1:***@", url)
    return _SECRET_PARAMS.sub(r"\1***", url)


def parse_cache_mb(text: str) -> int | None:
    """Read CAVRA_SQLITE_CACHE_MB: `auto` (None) or a positive number of MiB; ValueError otherwise."""
    if text.strip().lower() == "auto":
        return None
    try:
        mib = int(text)
    except ValueError:
        raise ValueError(f"expected auto or a number of MiB, got {text!r}") from None
    if mib <= 0:
        raise ValueError(f"expected auto or a positive number of MiB, got {text!r}")
    return mib


def cache_mb(value: str) -> str | None:
    try:
        parse_cache_mb(value)
    except ValueError as exc:
        return str(exc)
    return None


def page_size(value: int) -> str | None:
    return None if value in PAGE_SIZES else f"expected a power of two from 512 to 65536, got {value!r}"


def port_number(value: int) -> str | None:
    return None if value <= 65535 else f"expected a port number 0..65535, got {value!r}"


def monitor_urls(value: str) -> str | None:
    for url in value.split(",") if value else ():
        if not url.strip().startswith(("http://", "https://")):
            return f"expected comma-separated http:// URLs, got {redact_url(url)!r}"
    return None


def broker_urls(value: str) -> str | None:
    for url in value.split(",") if value else ():
        if not url.strip().startswith(("nats://", "tls://")):
            return f"expected comma-separated nats:// URLs, got {redact_url(url)!r}"
    return None
