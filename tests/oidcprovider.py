"""A real OpenID Connect provider for the sign-in tests: node's oidc-provider (tests/oidc/), on a loopback port.

`make oidc-provider` installs it (`npm ci` from the committed lockfile). Without node or the package the tests
skip with the reason; with CAVRA_REQUIRE_SERVICES=1 they fail instead.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REQUIRE_SERVICES

HERE = Path(__file__).resolve().parent / "oidc"
START_TIMEOUT_S = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_provider() -> str:
    """Return node's path, or skip (fail under CAVRA_REQUIRE_SERVICES=1) saying what is missing."""
    node = shutil.which("node")
    missing = []
    if node is None:
        missing.append("node (apt-get install nodejs npm)")
    if not (HERE / "node_modules" / "oidc-provider").is_dir():
        missing.append("tests/oidc/node_modules (make oidc-provider)")
    if not missing:
        assert node is not None
        return node
    message = "OpenID Connect tests need " + " and ".join(missing)
    if REQUIRE_SERVICES:
        pytest.fail(message + "; CAVRA_REQUIRE_SERVICES=1 requires it", pytrace=False)
    pytest.skip(message)


class OidcProvider:
    """One provider process: `start()` waits for its ready line, `stop()` kills and waits (call it in finally)."""

    def __init__(
        self, tmp: Path, clients: list[dict[str, Any]], users: dict[str, Any], *, id_token_ttl: int = 3600
    ) -> None:
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.clients = clients
        self.users_file = tmp / "oidc-users.json"
        self.options = {"id_token_ttl": id_token_ttl}
        self.set_users(users)
        self.process: subprocess.Popen[str] | None = None
        self.kid = ""
        self.lines: list[str] = []

    def set_users(self, users: dict[str, Any]) -> None:
        """Change the users (and their groups); the provider re-reads the file at every look-up."""
        temp = self.users_file.with_suffix(".tmp")
        temp.write_text(json.dumps(users))
        os.replace(temp, self.users_file)

    def start(self) -> None:
        node = require_provider()
        args = [node, str(HERE / "provider.mjs"), str(self.port), json.dumps(self.clients), str(self.users_file)]
        args.append(json.dumps(self.options))
        self.process = subprocess.Popen(
            args, cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        ready = threading.Event()

        def read(stream: Any) -> None:
            for line in stream:
                self.lines.append(line.rstrip())
                if line.startswith('{"ready":true'):
                    self.kid = json.loads(line)["kid"]
                    ready.set()

        threading.Thread(target=read, args=(self.process.stdout,), daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready.wait(0.05):
            if self.process.poll() is not None or time.monotonic() > deadline:
                output = "\n".join(self.lines[-20:])
                self.stop()
                raise RuntimeError(f"oidc-provider did not start:\n{output}")

    def restart(self) -> None:
        """Start again on the same port: a new signing key (kid), sessions and codes forgotten."""
        self.stop()
        self.start()

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> OidcProvider:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def sign_in_form(http: Any, url: str, login: str, redirect_uri: str) -> str:
    """Follow an authorization request through the provider's login form as `login`; return the callback URL.

    Stops at the first redirect to `redirect_uri` (never requests it), so the caller decides what reaches the RP.
    """
    import re
    from urllib.parse import urljoin

    for _ in range(12):
        async with http.get(url, allow_redirects=False) as reply:
            if reply.status in (302, 303):
                url = urljoin(url, reply.headers["Location"])
                if url.startswith(redirect_uri):
                    return url
                continue
            page = await reply.text()
        action = re.search(r'<form[^>]*action="([^"]+)"', page)
        if action is None:
            raise AssertionError(f"no form at {url}: {page[:500]}")
        fields = dict(re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', page))
        fields.update(login=login, password="any")
        async with http.post(urljoin(url, action.group(1)), data=fields, allow_redirects=False) as reply:
            if reply.status not in (302, 303):
                raise AssertionError(f"login form answered {reply.status}: {(await reply.text())[:500]}")
            url = urljoin(url, reply.headers["Location"])
            if url.startswith(redirect_uri):
                return url
    raise AssertionError("the provider's sign-in did not come back to the client")
