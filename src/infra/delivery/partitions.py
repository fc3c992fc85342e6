"""Partitions of the event stream, made by JetStream itself.

With P > 1 partitions, the relay publishes each event on `<ns>.events.<context>.<type>.<stream id>`
and the stream's subject transform rewrites it to `<ns>.events.<k>.<context>.<type>.<stream id>`,
where `k = partition(P, stream id)` is JetStream's deterministic subject-token partitioning
(FNV-1a, 32 bits, of the token, modulo P). Every event of one aggregate lands in one partition,
in the log's order. A projection that declares `partitioned = True` (its rows depend on one
aggregate's events only) runs as P lanes, one per partition, each with its own filtered consumer,
checkpoint and gap chain, so that several processes share it.

How a partition's lane knows it lacks nothing: the relay computes the same partition for each
event (`partition_of`, checked against the server in the tests) and sends, besides the log's
`Chronicle-Previous`, `Chronicle-Partition-Previous`: the position of the partition's previous
event. After each batch it also publishes a *mark* on `<ns>.events.<k>.mark` (a subject the
transform leaves alone) to every partition: "the
log is published up to H, and your last event is at h". A lane whose checkpoint is below h reads
what it lacks from PostgreSQL (filtered to its partition); otherwise it moves its checkpoint to H.
A partition's checkpoint therefore means "every event of this partition at or below it is
applied", and a view has applied position p when every partition's checkpoint is at least p.
"""

from __future__ import annotations

import uuid

MARK_TYPE = "$chronicle.Mark"
"""The type of a mark as lanes see it: no projection handles it, so it only moves a checkpoint."""

_FNV_OFFSET, _FNV_PRIME = 0x811C9DC5, 0x01000193


def partition_of(stream_id: uuid.UUID | str, partitions: int) -> int:
    """The partition JetStream's `{{partition(P,n)}}` gives the subject token `str(stream_id)`."""
    value = _FNV_OFFSET
    for byte in str(stream_id).encode():
        value = ((value ^ byte) * _FNV_PRIME) & 0xFFFFFFFF
    return value % partitions


def transform_source(namespace: str) -> str:
    return f"{namespace}.events.*.*.*"


def transform_destination(namespace: str, partitions: int) -> str:
    return f"{namespace}.events.{{{{partition({partitions},3)}}}}.{{{{wildcard(1)}}}}.{{{{wildcard(2)}}}}.{{{{wildcard(3)}}}}"


def partitions_of_destination(destination: str | None) -> int:
    """P from a stream's transform destination (1 when the stream is not partitioned)."""
    if not destination or "partition(" not in destination:
        return 1
    return int(destination.split("partition(", 1)[1].split(",", 1)[0])


def events_filter(namespace: str, partition: int | None) -> str:
    """What a consumer of one partition (or of the whole log, `None`) subscribes to."""
    return f"{namespace}.events.>" if partition is None else f"{namespace}.events.{partition}.>"


def mark_subject(namespace: str, partition: int) -> str:
    return f"{namespace}.events.{partition}.mark"


def is_mark(subject: str) -> bool:
    return subject.endswith(".mark")


def partition_in(subject: str, namespace: str) -> int:
    """The partition token JetStream put in a transformed subject."""
    return int(subject[len(namespace) + len(".events.") :].split(".", 1)[0])
