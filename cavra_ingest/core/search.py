"""Free-text search (`q`) and prefix filters (`repository=acme/*`): parsing and the semantics every store shares.

A term matches a decision when it is a substring of one of its searchable fields, ASCII letters compared
without case (what SQLite's LIKE and PostgreSQL's ILIKE under COLLATE "C" do); every term must match.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# Searched in this order; the first two are columns, the rest are read from the stored payload.
SEARCH_COLUMNS = ("target", "rule_id")
SEARCH_PAYLOAD_FIELDS = ("requested_operation", "reason", "policy_id", "tool_name", "mcp_server")
SEARCH_FIELDS = SEARCH_COLUMNS + SEARCH_PAYLOAD_FIELDS
# Filters whose values may end in `*` (a prefix), answered as index ranges.
PREFIX_FILTERS = ("repository", "agent_id", "policy_pack", "rule_id", "action_type")
# The trigram indexes cannot narrow a search on shorter terms.
MIN_TERM_CHARS = 3

_TERM = re.compile(r'"([^"]*)"?|(\S+)')
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


class BadSearch(ValueError):
    """The search text cannot be used; the message says why."""


def fold(text: str) -> str:
    """Lower ASCII letters only, as the stores' case-insensitive comparisons do."""
    return text.translate(_ASCII_LOWER)


def parse_terms(q: str, *, max_chars: int, max_terms: int) -> tuple[str, ...]:
    """Split `q` into folded terms: words, or "quoted phrases" kept whole."""
    if len(q) > max_chars:
        raise BadSearch(f"q is longer than {max_chars} characters")
    if any(ord(c) < 0x20 or c == "\x7f" for c in q):
        raise BadSearch("q must not contain control characters")
    terms: list[str] = []
    for phrase, word in _TERM.findall(q):
        term = fold(phrase or word)
        if term.strip() and term not in terms:
            terms.append(term)
    if len(terms) > max_terms:
        raise BadSearch(f"q has more than {max_terms} terms")
    if terms and all(len(term) < MIN_TERM_CHARS for term in terms):
        raise BadSearch(f"q needs at least one term of {MIN_TERM_CHARS} or more characters")
    return tuple(terms)


def trigrams(terms: tuple[str, ...]) -> list[str]:
    """Return the distinct three-character pieces of the terms long enough to have them."""
    found: list[str] = []
    for term in terms:
        for start in range(len(term) - MIN_TERM_CHARS + 1):
            piece = term[start : start + MIN_TERM_CHARS]
            if piece not in found:
                found.append(piece)
    return found


def like_pattern(term: str) -> str:
    """Return a LIKE pattern (escape character `\\`) matching the term anywhere."""
    return "%" + term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def search_text(fields: Mapping[str, Any]) -> str:
    """Join a record's searchable fields the way the SQL stores' expressions do."""
    return "\n".join(value if isinstance(value, str) else "" for value in (fields.get(f) for f in SEARCH_FIELDS))


def text_matches(fields: Mapping[str, Any], terms: tuple[str, ...]) -> bool:
    text = fold(search_text(fields))
    return all(term in text for term in terms)


def upper_bound(prefix: str) -> str | None:
    """Return the least string above every string starting with `prefix` (None: there is none)."""
    chars = list(prefix)
    while chars:
        code = ord(chars[-1]) + 1
        if 0xD800 <= code <= 0xDFFF:
            code = 0xE000  # surrogates cannot be stored in UTF-8 text
        if code <= 0x10FFFF:
            chars[-1] = chr(code)
            return "".join(chars)
        chars.pop()
    return None


def prefix_matches(value: Any, exact: tuple[str, ...], prefixes: tuple[str, ...]) -> bool:
    if value in exact:
        return True
    return isinstance(value, str) and any(value.startswith(p) for p in prefixes)


def split_prefixes(values: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Separate exact values from prefixes (values ending in `*`, the star removed)."""
    exact = tuple(v for v in values if not v.endswith("*"))
    prefixes = tuple(sorted({v[:-1] for v in values if v.endswith("*")}))
    return exact, prefixes
