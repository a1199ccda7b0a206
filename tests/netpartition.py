"""A three-node NATS cluster in network namespaces, for partition tests: each node has a cluster link and a
client link on two bridges, so one node can be cut off from its peers while clients still reach it."""

from __future__ import annotations

import os
import secrets
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import REQUIRE_SERVICES
from tests.natscluster import NATS_SERVER, Cluster, Node, require_nats


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def require_namespaces() -> None:
    """Skip without root and `ip netns` (a laptop), unless CAVRA_REQUIRE_SERVICES says the test must run."""
    problem = None
    if os.geteuid() != 0:
        problem = "network namespaces need root"
    else:
        probe = f"cvp{secrets.token_hex(3)}"
        try:
            ip("netns", "add", probe)
            ip("netns", "del", probe)
        except (OSError, subprocess.SubprocessError) as exc:
            problem = f"`ip netns add` failed: {exc}"
    if problem is None:
        return
    if REQUIRE_SERVICES:
        pytest.fail(problem + "; CAVRA_REQUIRE_SERVICES=1 requires it", pytrace=False)
    pytest.skip(problem)


@dataclass
class NetCluster(Cluster):
    """Nodes n0..n2 in namespaces; `isolate(i)` takes node i's cluster link down, `heal(i)` brings it back."""

    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    subnet: int = field(default_factory=lambda: 16 + secrets.randbelow(200))
    created: list[tuple[str, str]] = field(default_factory=list)

    def client_address(self, index: int) -> str:
        return f"10.79.{self.subnet}.{index + 1}"

    def cluster_address(self, index: int) -> str:
        return f"10.78.{self.subnet}.{index + 1}"

    def namespace(self, index: int) -> str:
        return f"cv{self.tag}n{index}"

    def link(self, kind: str, index: int) -> str:
        """The root-side end of node `index`'s `c` (cluster) or `l` (client) link (at most 15 characters)."""
        return f"cv{self.tag}{kind}{index}"

    def url_of(self, *indexes: int) -> str:
        return ",".join(f"nats://{self.client_address(i)}:4222" for i in indexes)

    @property
    def url(self) -> str:
        return self.url_of(*range(self.size))

    def build_network(self) -> None:
        for kind, network in (("C", "10.78"), ("L", "10.79")):
            bridge = f"cv{self.tag}{kind}"
            ip("link", "add", bridge, "type", "bridge")
            self.created.append(("link", bridge))
            if kind == "L":  # the root namespace (replicas, workers, the test) reaches the client links only
                ip("addr", "add", f"{network}.{self.subnet}.254/24", "dev", bridge)
            ip("link", "set", bridge, "up")
        for index in range(self.size):
            ns = self.namespace(index)
            ip("netns", "add", ns)
            self.created.append(("netns", ns))
            ip("-n", ns, "link", "set", "lo", "up")
            for kind, address in (("c", self.cluster_address(index)), ("l", self.client_address(index))):
                outer, inner = self.link(kind, index), f"{kind}{index}"
                ip("link", "add", outer, "type", "veth", "peer", "name", inner, "netns", ns)
                ip("link", "set", outer, "master", f"cv{self.tag}{kind.upper()}", "up")
                ip("-n", ns, "addr", "add", f"{address}/24", "dev", inner)
                ip("-n", ns, "link", "set", inner, "up")

    def configure(self) -> None:
        self.build_network()
        self.nodes = [
            Node(f"n{i}", 4222, 6222, self.root / f"n{i}.conf", host=self.client_address(i)) for i in range(self.size)
        ]
        for index, node in enumerate(self.nodes):
            routes = ", ".join(f"nats-route://{self.cluster_address(o)}:6222" for o in range(self.size) if o != index)
            node.config.write_text(
                f"server_name: {node.name}\nlisten: {self.client_address(index)}:4222\n"
                f'jetstream {{ store_dir: "{self.root / node.name}", max_memory_store: 64MB, max_file_store: 1GB }}\n'
                f"cluster {{ name: cavra-part, listen: {self.cluster_address(index)}:6222, routes: [{routes}] }}\n"
            )

    def start_node(self, node: Node) -> None:
        index = self.nodes.index(node)
        with open(self.root / f"{node.name}.log", "ab") as log:
            # `ip netns exec` execs the server itself: the Popen's pid is nats-server's, so kill() reaches it.
            node.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.namespace(index), NATS_SERVER, "-c", str(node.config)],
                stdout=log,
                stderr=log,
            )

    def isolate(self, index: int) -> None:
        ip("link", "set", self.link("c", index), "down")

    def heal(self, index: int) -> None:
        ip("link", "set", self.link("c", index), "up")

    async def start(self, timeout: float = 30.0) -> None:
        require_nats()
        require_namespaces()
        await super().start(timeout)

    def stop(self) -> None:
        super().stop()
        for kind, name in reversed(self.created):
            try:
                ip(kind, "del", name)
            except subprocess.CalledProcessError:
                pass  # a namespace's links go with it
        self.created.clear()


def log_tail(root: Path, name: str) -> str:
    path = root / f"{name}.log"
    return path.read_text(errors="replace")[-2000:] if path.exists() else ""
