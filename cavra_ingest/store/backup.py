"""A consistent copy of a live SQLite store through SQLite's online backup API, checked after writing."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from cavra_ingest.core.progress import Progress

# Pages copied per step: the server's writer may take the lock between steps, so a backup never stalls it long.
PAGES_PER_STEP = 1024


class BackupError(Exception):
    """The backup could not be made or did not verify; the partial file was removed."""


def backup(source: Path, target: Path, progress: Progress | None = None) -> int:
    """Copy `source` to `target` page by page, verify it with integrity_check; return the page count."""
    if not source.exists():
        raise BackupError(f"no SQLite store at {source}")
    if target.exists():
        raise BackupError(f"{target} exists; choose a new file")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    dst = sqlite3.connect(partial)
    try:

        def step(status: int, remaining: int, total: int) -> None:
            if progress is not None:
                progress.total = total
                progress.advance(total - remaining - progress.done)

        # A write by the server between steps restarts the copy from its own connection's view; the result is
        # always one consistent snapshot (https://sqlite.org/backup.html).
        src.backup(dst, pages=PAGES_PER_STEP, progress=step)
        # The copy keeps WAL mode off until the server opens it, so it is one self-contained file.
        dst.execute("PRAGMA journal_mode=DELETE")
        pages = int(dst.execute("PRAGMA page_count").fetchone()[0])
        problems = [row[0] for row in dst.execute("PRAGMA integrity_check").fetchall()]
    finally:
        src.close()
        dst.close()
    if problems != ["ok"]:
        partial.unlink(missing_ok=True)
        raise BackupError(f"backup failed integrity_check: {'; '.join(problems[:5])}")
    with open(partial, "rb") as written:
        os.fsync(written.fileno())
    partial.rename(target)
    return pages
