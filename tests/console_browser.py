"""Support for the console's browser tests: a real server in a thread, Debian's Chromium, seed data."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from cavra_ingest.http.app import create_app
from cavra_ingest.settings import Settings

CHROMIUM = Path(os.environ.get("CAVRA_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
DOCS = Path(__file__).resolve().parent.parent / "docs"


def require_browser() -> None:
    """Skip without Chromium or Playwright on a workstation; fail loudly on CI."""
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("playwright (pip install -e '.[test]')")
    if not missing:
        return
    message = "browser tests need " + " and ".join(missing)
    if any(os.environ.get(name, "").lower() in {"1", "true", "yes"} for name in ("CI", "CAVRA_REQUIRE_SERVICES")):
        pytest.fail(message + "; CAVRA_REQUIRE_SERVICES=1 requires it", pytrace=False)
    pytest.skip(message)


def start_loop() -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    """Run a new event loop in a daemon thread, for servers the synchronous tests talk to."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="console-server", daemon=True)
    thread.start()
    return loop, thread


def stop_loop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)
    loop.close()


class LiveServer:
    """The real app on 127.0.0.1 and a random port, on an event loop in another thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, db: Path) -> None:
        self.loop = loop
        self.db = db
        self.runner: web.AppRunner | None = None
        self.base = ""

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    async def _start(self) -> None:
        # A `.json` file means the JSON store (SPEC §4); anything else is a SQLite database.
        store = {"activity_store": str(self.db)} if self.db.suffix == ".json" else {"activity_db": str(self.db)}
        self.runner = web.AppRunner(create_app(Settings.of(**store)), shutdown_timeout=5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.base = f"http://127.0.0.1:{port}"

    def start(self) -> LiveServer:
        self._run(self._start())
        return self

    def stop(self) -> None:
        """Shut the server down (drain, close the store); later requests find nobody listening."""
        if self.runner is not None:
            runner, self.runner = self.runner, None
            self._run(runner.cleanup())

    def url(self, path: str) -> str:
        return self.base + path

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url(path), data=data, method=method)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, json.loads(exc.read() or b"null")

    def post(self, path: str, body: Any) -> Any:
        """POST through the public API; a 2xx means committed, so the console can see it at once."""
        status, answer = self.request("POST", path, body)
        assert status == 200, answer
        return answer


def ago(**delta: float) -> str:
    return (datetime.now(UTC) - timedelta(**delta)).isoformat()


def seed_decisions() -> list[dict[str, Any]]:
    """Twelve decisions in three sessions, spread over ten days, with every filter dimension varied."""
    alpha = {"session_id": "sess-alpha", "repository": "acme/api", "agent_id": "claude-code"}
    beta = {
        "session_id": "sess-beta",
        "repository": "acme/web",
        "agent_id": "codex",
        "policy_pack": "strict-prod",
        "tenant_id": "tenant-acme",
        "workspace_id": "ws-frontend",
    }
    gamma = {"session_id": "sess-gamma", "repository": "acme/infra", "agent_id": "codex"}

    def d(ident: str, scope: dict[str, str], when: str, *fields: str, **extra: Any) -> dict[str, Any]:
        outcome, severity, action, target, rule = fields
        body = {"decision_id": ident, **scope, "timestamp": when, "decision": outcome, "severity": severity}
        return {**body, "action_type": action, "target": target, "rule_id": rule, **extra}

    return [
        d("dec-a1", alpha, ago(minutes=20), "allow", "low", "read_file", "src/app.py", "fs.read"),
        d("dec-a2", alpha, ago(minutes=15), "warn", "medium", "write_file", "src/config.py", "fs.write-config"),
        d(
            "dec-a3",
            alpha,
            ago(minutes=10),
            "block",
            "high",
            "execute_command",
            "rm -rf /srv/api",
            "shell.destructive",
            reason="Destructive shell command outside the workspace",
            evidence_refs=["https://ci.example.com/runs/42", "sha256:9f2c"],
            context={"cwd": "/srv/api", "shell": "bash"},
        ),  # fmt: skip
        d(
            "dec-a4",
            alpha,
            ago(minutes=5),
            "require_approval",
            "critical",
            "git_operation",
            "git push --force origin main",
            "git.force-push",
            approver_group="release-managers",
            correlation_id="corr-release-7",
        ),  # fmt: skip
        d("dec-b1", beta, ago(hours=3), "allow", "low", "read_file", "package.json", "fs.read"),
        d("dec-b2", beta, ago(hours=2, minutes=50), "audit_only", "low", "mcp_tool_call", "github.search", "mcp.audit"),
        d("dec-b3", beta, ago(hours=2, minutes=40), "block", "critical", "write_file", ".env", "secrets.dotenv"),
        d("dec-g1", gamma, ago(days=3), "allow_with_attestation", "medium", "pull_request", "PR #12", "pr.attest"),
        d("dec-g2", gamma, ago(days=3, minutes=1), "allow", "low", "read_file", "main.tf", "fs.read"),
        d("dec-g3", gamma, ago(days=10), "block", "high", "execute_command", "terraform destroy", "iac.destroy"),
        d("dec-g4", gamma, ago(days=10, minutes=1), "warn", "medium", "read_file", "secrets.tfvars", "fs.read"),
        d(
            "dec-g5",
            gamma,
            ago(days=10, minutes=2),
            "block",
            "low",
            "write_file",
            '<img src=x onerror="window.__pwned=1">',
            "fs.write",
        ),  # fmt: skip
    ]
