"""Insert CPU with and without 007's triggers, statement journal on disk or in memory.

Run: `.venv/bin/python bench/trigger_cost.py` (CPU time of the process: steadier than wall time on a
shared machine). The figures are quoted in docs/reading.md, "Times written by CAVRA".
"""

from __future__ import annotations

import pathlib
import sqlite3
import tempfile
import time

from cavra_ingest.store.migrate import apply_migrations

ROWS, BATCH, ROUNDS = 50_000, 2000, 5
INSERT = (
    "INSERT INTO activity_decisions (decision_id, session_id, agent_id, actor, repository, policy_pack,"
    " action_type, target, rule_id, decision, severity, timestamp, correlation_id, payload)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def rows() -> list[tuple[str, ...]]:
    """Rows as cavra-ingest writes them: times already normalised, so the triggers' WHEN is false."""
    return [
        (f"d{n:07d}", f"s{n % 500}", "a", "ai", "r", "p", "x", "", "rule", "allow", "low")
        + (f"2026-03-01T{n // 3600 % 24:02d}:{n // 60 % 60:02d}:{n % 60:02d}.{n:06d}+00:00", f"c{n}", "{}")
        for n in range(ROWS)
    ]


def run(base: pathlib.Path, data: list[tuple[str, ...]], triggers: bool, temp_store: str) -> float:
    path = pathlib.Path(tempfile.mkdtemp()) / "t.db"
    path.write_bytes(base.read_bytes())
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")
    db.execute(f"PRAGMA temp_store={temp_store}")
    if not triggers:
        for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
            db.execute(f"DROP TRIGGER {name}")
    start = time.process_time()
    for i in range(0, len(data), BATCH):
        db.execute("BEGIN")
        db.executemany(INSERT, data[i : i + BATCH])
        db.execute("COMMIT")
    db.close()
    return time.process_time() - start


def main() -> None:
    base = pathlib.Path(tempfile.mkdtemp()) / "base.db"
    apply_migrations(base)
    data = rows()
    results: dict[tuple[bool, str], list[float]] = {}
    for _ in range(ROUNDS):
        for triggers in (False, True):
            for temp_store in ("DEFAULT", "MEMORY"):
                results.setdefault((triggers, temp_store), []).append(run(base, data, triggers, temp_store))
    for (triggers, temp_store), seconds in results.items():
        per_row = min(seconds) / ROWS * 1e6
        print(f"triggers={triggers!s:5} temp_store={temp_store:7} min {min(seconds):.2f} s  {per_row:.1f} µs/row")


if __name__ == "__main__":
    main()
