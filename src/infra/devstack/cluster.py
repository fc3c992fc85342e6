"""A NATS cluster on loopback: several `nats-server` processes from the same wheel, routed to each
other, each with JetStream and its own store, for tests (and anyone who wants to try replicated
streams on one machine). JetStream needs a majority of the nodes up to elect stream leaders."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from infra.devstack.embedded import EmbeddedServerError, _banner, _find_binary, _free_port, _stop_process


class NatsCluster:
    def __init__(self, data_dir: Path, size: int = 3, name: str = "chronicle") -> None:
        self.data_dir, self.size, self.name = data_dir, size, name
        self.client_ports = [_free_port() for _ in range(size)]
        self.route_ports = [_free_port() for _ in range(size)]
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.binary = _find_binary("nats-server", None)

    @property
    def url(self) -> str:
        """Every node, comma-separated: clients fail over between them."""
        return ",".join(f"nats://127.0.0.1:{port}" for port in self.client_ports)

    def start(self) -> str:
        for node in range(self.size):
            self.start_node(node)
        return self.url

    def start_node(self, node: int) -> None:
        """Starts (or starts again, with its store) one node and waits until it accepts clients."""
        routes = ",".join(f"nats://127.0.0.1:{p}" for i, p in enumerate(self.route_ports) if i != node)
        store = self.data_dir / f"node{node}"
        store.mkdir(parents=True, exist_ok=True)
        argv = [
            self.binary, "-a", "127.0.0.1", "-p", str(self.client_ports[node]),
            "-n", f"{self.name}-{node}", "--cluster_name", self.name,
            "--cluster", f"nats://127.0.0.1:{self.route_ports[node]}", "--routes", routes,
            "-js", "-sd", str(store),
        ]  # fmt: skip
        with (self.data_dir / f"node{node}.log").open("ab") as out:
            self.procs[node] = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while not _banner(self.client_ports[node], b"INFO"):
            if self.procs[node].poll() is not None or time.monotonic() > deadline:
                raise EmbeddedServerError(f"NATS node {node} did not start; see {self.data_dir}/node{node}.log")
            time.sleep(0.05)

    def kill_node(self, node: int) -> None:
        """SIGKILL: the node gets no chance to hand anything over."""
        proc = self.procs.pop(node)
        proc.kill()
        proc.wait()

    def stop(self) -> None:
        for node, proc in self.procs.items():
            _stop_process(f"nats node {node}", proc, signal.SIGTERM)
        self.procs.clear()
