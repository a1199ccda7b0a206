"""SQL text shared by the stores and the audit log's tables: statements are written with `?` placeholders."""

from __future__ import annotations

import re


def numbered(sql: str) -> str:
    """Turn the shared `?` placeholders into asyncpg's `$1, $2, ...`."""
    counter = iter(range(1, 10_000))
    return re.sub(r"\?", lambda _: f"${next(counter)}", sql)
