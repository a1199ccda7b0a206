"""A real `cavra-ingest serve` process for fault tests, and checks on the file it leaves."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from cavra_ingest.core.models import DecisionRecord
from cavra_ingest.core.summary import recount


def free_port() -> int:
    """Ask the kernel for a free port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """One server process on a SQLite file (a JSON store for `*.json`); `env` holds extra CAVRA_* settings.

    `db=None` passes no store flag: the server picks its default store, relative to `cwd`; `db_url` (a
    postgresql:// URL, the schema in `env`'s CAVRA_POSTGRES_SCHEMA) is passed as `--db` instead.
    """

    db: Path | None
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    db_url: str | None = None
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self, timeout: float = 20.0, port: int | None = None) -> None:
        """Start the process and wait until /healthz answers; `port` restarts it where clients expect it."""
        self.port = port or free_port()
        env = {**os.environ, **self.env}
        env.pop("CAVRA_ACTIVITY_STORE", None)
        env.pop("CAVRA_ACTIVITY_DB", None)
        command = [sys.executable, "-m", "cavra_ingest", "serve", "--port", str(self.port)]
        if self.db is not None:
            command += ["--json-store" if self.db.suffix == ".json" else "--db", str(self.db)]
        elif self.db_url is not None:
            command += ["--db", self.db_url]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(command, env=env, cwd=self.cwd, stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log()[-2000:]}")
                try:
                    async with http.get(f"{self.url}/healthz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        raise TimeoutError("server did not come up")

    @property
    def log_path(self) -> Path:
        return self.db.with_suffix(".log") if self.db is not None else (self.cwd or Path.cwd()) / "serve.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind runs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    async def terminate(self, timeout: float) -> tuple[int, float]:
        """SIGTERM, then wait for the exit; return (exit code, seconds taken)."""
        assert self.proc is not None
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        while self.proc.poll() is None:
            if time.monotonic() - start > timeout:
                self.kill()
                raise TimeoutError(f"server did not exit within {timeout}s")
            await asyncio.sleep(0.02)
        return self.proc.returncode, time.monotonic() - start

    def peak_rss_kib(self) -> int:
        """Return the process's peak resident set (VmHWM) in KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise RuntimeError("VmHWM not found")


def acknowledged(status: int, body: Any, sent: list[dict[str, Any]]) -> list[str]:
    """Return the decision ids a response acknowledged as stored (created or duplicate)."""
    if status not in (200, 207):
        return []
    if isinstance(body, dict) and "results" in body:
        return [r["decision_id"] for r in body["results"] if r["status"] in ("created", "duplicate")]
    return [sent[0]["decision_id"]]


SUMMARY_COLUMNS = (
    "SELECT session_id, decision_count, blocked_count, approval_required_count, started_at, updated_at,"
    " agent_id, payload FROM activity_sessions"
)


def assert_summaries_recount(
    payloads: Iterable[str | bytes], sessions: list[Any], *, descriptive: bool = True
) -> set[str]:
    """Assert every summary row (SUMMARY_COLUMNS) equals a recount of the stored decisions; return their ids.

    `descriptive=False` skips agent_id, which POST /sessions may set apart from the decisions.
    """
    ids: set[str] = set()
    by_session: dict[str, list[DecisionRecord]] = {}
    for payload in payloads:
        record = msgspec.json.decode(payload, type=DecisionRecord)
        ids.add(record.decision_id)
        by_session.setdefault(record.session_id, []).append(record)
    assert {row[0] for row in sessions} >= set(by_session)
    for session_id, count, blocked, approval, started, updated, agent, payload in sessions:
        if session_id not in by_session:
            # Made by POST /sessions alone: no decisions, so nothing counted.
            assert (count, blocked, approval) == (0, 0, 0), session_id
            continue
        expected = recount(session_id, by_session[session_id])
        stored = msgspec.json.decode(payload)
        assert (count, blocked, approval, started, updated, agent, stored["evidence_refs"]) == (
            expected.decision_count,
            expected.blocked_count,
            expected.approval_required_count,
            expected.started_at,
            expected.updated_at,
            expected.agent_id if descriptive else agent,
            expected.evidence_refs,
        ), session_id
        assert stored.get("last_decision_id") == expected.last_decision_id, session_id
    return ids


def check_file(db: Path, descriptive: bool = True) -> dict[str, Any]:
    """Check integrity and that every session summary equals a recount of its decisions."""
    conn = sqlite3.connect(db)
    try:
        integrity = conn.execute("PRAGMA integrity_check").fetchall()
        assert integrity == [("ok",)], integrity
        payloads = [row[0] for row in conn.execute("SELECT payload FROM activity_decisions")]
        sessions = conn.execute(SUMMARY_COLUMNS).fetchall()
        ids = assert_summaries_recount(payloads, sessions, descriptive=descriptive)
        return {"ids": ids, "sessions": len(sessions)}
    finally:
        conn.close()
