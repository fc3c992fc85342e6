"""An embedded server whose chosen port something else took in the meantime (an outgoing connection
may be handed any free port) starts on another port instead of failing the whole start."""

from __future__ import annotations

import socket
from pathlib import Path

import redis

from infra.devstack.embedded import EmbeddedServers


def test_a_server_whose_port_was_taken_meanwhile_starts_on_another(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        servers = EmbeddedServers(tmp_path, durable=False)
        servers.ports = {"redis": port}
        try:
            url = servers._start("redis")
            assert servers.ports["redis"] != port and url == f"redis://127.0.0.1:{servers.ports['redis']}/0"
            assert redis.Redis.from_url(url).ping()
            assert "in use" in (tmp_path / "logs" / "redis.log").read_text().lower()
        finally:
            servers.stop()
