"""Seal heads outside PostgreSQL: every seal the relay writes is also published, signed, to a
JetStream stream of its own (`<NAMESPACE>_SEALS`, replicated like the event stream, kept for
good). `chronicle audit verify` compares the database's seals with the newest head there, so a
log whose tail was cut (events and seals deleted) no longer passes."""

from __future__ import annotations

import nats
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import NotFoundError

from infra.eventstore.signing import MalformedHead, SealHead, encode_head, parse_head
from infra.eventstore.verify import ExternalHead


def anchor_stream(namespace: str) -> str:
    return f"{namespace.upper()}_SEALS"


def anchor_subject(namespace: str) -> str:
    return f"{namespace}.seals"


async def ensure_anchor_stream(js: JetStreamContext, namespace: str, replicas: int = 1) -> None:
    try:
        await js.stream_info(anchor_stream(namespace))
    except NotFoundError:
        await js.add_stream(
            StreamConfig(
                name=anchor_stream(namespace),
                subjects=[anchor_subject(namespace)],
                storage=StorageType.FILE,
                num_replicas=replicas,
                duplicate_window=120,
            )
        )


async def publish_head(js: JetStreamContext, namespace: str, head: SealHead) -> None:
    await js.publish(anchor_subject(namespace), encode_head(head), headers={"Nats-Msg-Id": f"seal-{head.seq}"})


async def latest_head(js: JetStreamContext, namespace: str) -> SealHead | None:
    """The newest head published, or None when none was (yet). A malformed one raises MalformedHead."""
    try:
        msg = await js.get_last_msg(anchor_stream(namespace), anchor_subject(namespace))
    except NotFoundError:
        return None
    if msg.data is None:
        raise MalformedHead("the newest seal head in JetStream is empty")
    return parse_head(msg.data)


async def external_heads(js: JetStreamContext | None, namespace: str) -> tuple[list[ExternalHead], list[str]]:
    """The newest JetStream head to verify against (none if none was published yet), and a note
    when it could not be read. A malformed head is returned as a problem by `verify`'s caller."""
    if js is None:
        return [], ["JetStream is not reachable: the newest seal was not compared with an external head"]
    try:
        head = await latest_head(js, namespace)
    except MalformedHead:
        raise
    except Exception as e:  # NATS away or slow: verify what PostgreSQL holds, and say what was not checked
        return [], [f"JetStream did not answer ({e}): the newest seal was not compared with an external head"]
    return ([ExternalHead("jetstream", head)] if head is not None else []), []


async def heads_from(nats_url: str, namespace: str, timeout: float = 5.0) -> tuple[list[ExternalHead], list[str]]:
    """`external_heads` over a connection of its own (the CLI)."""
    try:
        nc = await nats.connect(servers=nats_url.split(","), connect_timeout=timeout, max_reconnect_attempts=0)
    except Exception as e:  # reported as a note: the database can still be verified
        return [], [f"JetStream is not reachable ({e}): the newest seal was not compared with an external head"]
    try:
        return await external_heads(nc.jetstream(timeout=timeout), namespace)
    finally:
        await nc.close()
