"""Delivery over a three-node JetStream cluster (three `nats-server` processes from the wheel, on
loopback, the event stream replicated three times): the node leading the stream is SIGKILLed while
commands flow and started again later. Nothing is lost or published twice, every view equals the
log, and the relay and projector carry on without a restart of their own."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.devstack.cluster import NatsCluster
from infra.devstack.embedded import ServerUrls
from infra.settings import Settings
from tests.integration.pipeline import (
    all_roles,
    assert_stream_is_the_log,
    checkpoints,
    differences_from_scratch,
    head,
    running,
    stream_contents,
    wait_active,
    wait_caught_up,
)
from tests.integration.test_delivery_faults import Workload
from tests.waiting import eventually


@pytest.fixture
def cluster() -> Iterator[NatsCluster]:
    with tempfile.TemporaryDirectory(prefix="chronicle-nats-cluster-") as tmp:
        nodes = NatsCluster(Path(tmp))
        nodes.start()
        try:
            yield nodes
        finally:
            nodes.stop()


@pytest.mark.timeout(400)
def test_a_killed_stream_leader_loses_nothing_and_stops_no_process(
    cluster: NatsCluster, servers: ServerUrls, fresh_database_url: str
) -> None:
    settings = Settings(
        database_url=fresh_database_url,
        nats_url=cluster.url,
        redis_url=servers.redis_url,
        namespace=f"c{uuid.uuid4().hex[:8]}",
        stream_replicas=3,
    )
    workload = Workload(settings, 2000)
    with running(settings, "relay", "projector", CHRONICLE_STREAM_REPLICAS="3") as processes:
        wait_active(settings, *all_roles())
        workload.start()
        eventually(lambda: workload.done >= 300 or not workload.is_alive(), what="the first commands", timeout=60)
        leader, _ = stream_contents(settings)
        assert leader is not None
        victim = int(leader.rsplit("-", 1)[1])
        cluster.kill_node(victim)
        eventually(
            lambda: workload.done >= 1200 or not workload.is_alive(), what="commands while a node is down", timeout=60
        )
        during = head(settings.database_url or "")
        # Delivered through the two nodes left, while the third is still down: the clients failed over.
        eventually(
            lambda: min(checkpoints(settings.database_url or "", settings).values()) >= during,
            what="the views to catch up while a node is down",
            timeout=120,
        )
        cluster.start_node(victim)
        workload.join()
        assert workload.error is None, workload.error
        wait_caught_up(settings, timeout=120)
        crashed = {name: p.returncode for name, p in processes.procs.items() if p.poll() is not None}
        assert not crashed, f"processes exited: {crashed}"
    assert_stream_is_the_log(settings)
    differences = differences_from_scratch(settings)
    assert differences == {name: [] for name in differences}, differences
