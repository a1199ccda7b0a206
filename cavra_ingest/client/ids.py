"""Time-ordered decision ids: `dec_` + the 32 hex digits of a UUIDv7 (RFC 9562)."""

from __future__ import annotations

import secrets
import threading
import time

PREFIX = "dec_"
SEQ_BITS = 12  # rand_a of UUIDv7, used as a counter within one millisecond (RFC 9562 §6.2, method 1)
SEQ_MAX = (1 << SEQ_BITS) - 1


class IdGenerator:
    """Make UUIDv7 values that strictly increase, even within a millisecond or across a clock step back."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # SyncClient callers make ids on their own threads
        self._last_ms = 0
        self._seq = 0

    def uuid7_int(self, now_ms: int | None = None) -> int:
        """Return the next UUIDv7 as an int."""
        with self._lock:
            ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
            if ms > self._last_ms:
                # A random start with the top bit clear: unguessable, with room to count up in a burst.
                self._last_ms, self._seq = ms, secrets.randbits(SEQ_BITS - 1)
            elif self._seq < SEQ_MAX:
                self._seq += 1
            else:
                # More ids in one millisecond than the counter holds: borrow the next millisecond.
                self._last_ms, self._seq = self._last_ms + 1, 0
            ms, seq = self._last_ms, self._seq
        value = (ms & ((1 << 48) - 1)) << 80
        value |= 0x7 << 76  # version
        value |= seq << 64
        value |= 0b10 << 62  # variant
        return value | secrets.randbits(62)

    def new_decision_id(self, now_ms: int | None = None) -> str:
        """Return a fresh id whose string order is its creation order."""
        return f"{PREFIX}{self.uuid7_int(now_ms):032x}"


_default = IdGenerator()


def new_decision_id(now_ms: int | None = None) -> str:
    """Return a fresh id from the process-wide generator."""
    return _default.new_decision_id(now_ms)


def id_time_ms(decision_id: str) -> int:
    """Return the Unix time in ms an id made here was created at."""
    return int(decision_id.removeprefix(PREFIX)[:12], 16)
