"""Time-ordered decision ids: `dec_` + the 32 hex digits of a UUIDv7 (RFC 9562)."""

from __future__ import annotations

import secrets
import threading
import time

PREFIX = "dec_"
_SEQ_BITS = 12  # rand_a of UUIDv7, used as a counter within one millisecond (RFC 9562 §6.2, method 1)
_SEQ_MAX = (1 << _SEQ_BITS) - 1

_lock = threading.Lock()
_last_ms = 0
_seq = 0


def uuid7_int(now_ms: int | None = None) -> int:
    """Return a UUIDv7 as an int, strictly increasing within this process."""
    global _last_ms, _seq
    with _lock:
        ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        if ms > _last_ms:
            # A random start leaves room to count up; the top bit stays clear so a burst rarely overflows.
            _last_ms, _seq = ms, secrets.randbits(_SEQ_BITS - 1)
        elif _seq < _SEQ_MAX:
            _seq += 1
        else:
            # More ids in one millisecond (or a clock step back) than the counter holds: borrow the next one.
            _last_ms, _seq = _last_ms + 1, 0
        ms, seq = _last_ms, _seq
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version
    value |= seq << 64
    value |= 0b10 << 62  # variant
    value |= secrets.randbits(62)
    return value


def new_decision_id(now_ms: int | None = None) -> str:
    """Return a fresh id whose string order is its creation order."""
    return f"{PREFIX}{uuid7_int(now_ms):032x}"


def id_time_ms(decision_id: str) -> int:
    """Return the Unix time in ms an id made here was created at."""
    return int(decision_id.removeprefix(PREFIX)[:12], 16)
