"""Progress of a long command: a redrawn bar on a terminal, plain lines (one per step of 10 % or 5 s) otherwise."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

BAR_WIDTH = 30
LINE_EVERY_S = 5.0
LINE_EVERY_FRACTION = 0.1
REDRAW_EVERY_S = 0.1


class Progress:
    """Report `done` out of `total` (None when unknown) under a label; call `close` once at the end.

    `detail`, when given, adds its text to every line (counts by outcome, say). Usable as a `with` block.
    """

    def __init__(
        self,
        label: str,
        total: int | None = None,
        stream: TextIO | None = None,
        detail: Callable[[], str] | None = None,
    ) -> None:
        self.label = label
        self.total = total
        self.detail = detail
        self.done = 0
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._shown_at = 0.0
        self._shown_fraction = 0.0

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def set(self, done: int) -> None:
        """Report an absolute count (for work counted elsewhere)."""
        self.advance(done - self.done)

    def advance(self, count: int = 1) -> None:
        self.done += count
        now = time.monotonic()
        if self.tty:
            if now - self._shown_at >= REDRAW_EVERY_S:
                self._shown_at = now
                self.stream.write("\r" + self.line())
                self.stream.flush()
            return
        fraction = self.done / self.total if self.total else 0.0
        if now - self._shown_at >= LINE_EVERY_S or fraction - self._shown_fraction >= LINE_EVERY_FRACTION:
            self._shown_at, self._shown_fraction = now, fraction
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def line(self) -> str:
        extra = f" {self.detail()}" if self.detail is not None else ""
        if not self.total:
            return f"{self.label}: {self.done}{extra}"
        fraction = min(self.done / self.total, 1.0)
        filled = int(fraction * BAR_WIDTH)
        bar = f" [{'#' * filled}{'.' * (BAR_WIDTH - filled)}]" if self.tty else ""
        return f"{self.label}:{bar} {self.done}/{self.total} ({fraction:.0%}){extra}"

    def close(self) -> None:
        self.stream.write(("\r" if self.tty else "") + self.line() + " done\n")
        self.stream.flush()
