"""Events as they leave the store: one envelope with the event's data as plain JSON values and all
its metadata. The relay publishes it (msgspec JSON) and projections apply it; auditors read it."""

from __future__ import annotations

import uuid
from datetime import datetime
from functools import lru_cache
from typing import Any

import msgspec
from eventsourcing.persistence import JSONTranscoder

from commands.base import domain_transcodings, make_transcoder
from domain.identity import SECRET_FIELDS

LOG_COLUMNS = (
    "notification_id, event_id, stream_id, version, topic, type, data, recorded_at, actor_id, command,"
    " correlation_id, causation_id"
)
REDACTED = "[redacted]"


class EventEnvelope(msgspec.Struct, frozen=True, kw_only=True):
    """`position` is the event's place in the total order; `previous` the place of the event just
    before it (0 for the first), so a consumer can tell when one is missing. `trace_parent` is the
    W3C traceparent of the span that appended it, or delivered it last (infra.observe.tracing)."""

    event_id: uuid.UUID
    position: int
    previous: int
    stream_id: uuid.UUID
    version: int
    type: str
    context: str
    data: dict[str, Any]
    recorded_at: datetime
    actor_id: str | None = None
    command: str | None = None
    correlation_id: uuid.UUID | None = None
    causation_id: uuid.UUID | None = None
    trace_parent: str | None = None

    @property
    def subject_token(self) -> str:
        return self.type.replace(".", "")


class WireEnvelope(msgspec.Struct, frozen=True, kw_only=True):
    """The JSON on the wire: positions as strings (they exceed what a JavaScript number holds)."""

    event_id: uuid.UUID
    position: str
    previous: str
    stream_id: uuid.UUID
    version: int
    type: str
    context: str
    data: dict[str, Any]
    recorded_at: datetime
    actor_id: str | None = None
    command: str | None = None
    correlation_id: uuid.UUID | None = None
    causation_id: uuid.UUID | None = None
    trace_parent: str | None = None


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(WireEnvelope)


def encode(envelope: EventEnvelope) -> bytes:
    fields = msgspec.structs.asdict(envelope)
    fields["position"], fields["previous"] = str(envelope.position), str(envelope.previous)
    return _encoder.encode(WireEnvelope(**fields))


def decode(payload: bytes) -> EventEnvelope:
    wire = _decoder.decode(payload)
    fields = msgspec.structs.asdict(wire)
    fields["position"], fields["previous"] = int(wire.position), int(wire.previous)
    return EventEnvelope(**fields)


@lru_cache(maxsize=4096)
def context_of(topic: str) -> str:
    """`domain.work:Task.Assigned` -> `work`."""
    return topic.partition(":")[0].rpartition(".")[2]


_plain_decoder = msgspec.json.Decoder()
_PLAIN_TYPES = {"datetime_iso", "decimal_str", *(t.name for t in domain_transcodings())}  # data already plain JSON


class EnvelopeReader:
    """Turns rows of the events table into envelopes: data as plain JSON values (UUIDs, dates and
    times as strings), internal fields dropped, secrets redacted. An envelope read from the log and
    one received from NATS carry exactly the same data.

    The stored data is the applications' transcoder's JSON, where non-JSON values are wrapped as
    `{"_type_": ..., "_data_": ...}`; the known wrappers are unwrapped here directly (a tenth of the
    cost of decoding into Python objects and back), anything else through the transcoder."""

    def __init__(self, transcoder: JSONTranscoder | None = None) -> None:
        self.transcoder = transcoder or make_transcoder()

    def data(self, raw: bytes) -> dict[str, Any]:
        state: dict[str, Any] = _plain_decoder.decode(raw)
        for key, value in state.items():
            if type(value) is dict or type(value) is list:
                state[key] = self._plain(value)
        state.pop("originator_topic", None)
        for field in SECRET_FIELDS & state.keys():
            state[field] = REDACTED
        return state

    def _plain(self, value: Any) -> Any:
        if isinstance(value, dict):
            if len(value) == 2 and "_type_" in value and "_data_" in value:
                kind, data = value["_type_"], value["_data_"]
                if kind == "uuid_hex":
                    return str(uuid.UUID(hex=data))
                if kind in _PLAIN_TYPES:
                    return data
                plain: Any = msgspec.to_builtins(self.transcoder.decode(msgspec.json.encode(value)))
                return plain
            for key, item in value.items():
                if type(item) is dict or type(item) is list:
                    value[key] = self._plain(item)
            return value
        if isinstance(value, list):
            return [self._plain(v) if type(v) is dict or type(v) is list else v for v in value]
        return value

    def from_row(self, row: tuple[Any, ...], previous: int) -> EventEnvelope:
        """A row of LOG_COLUMNS as an envelope."""
        position, event_id, stream_id, version, topic, type_, data, recorded_at, actor, command, corr, cause = row
        return EventEnvelope(
            event_id=event_id,
            position=position,
            previous=previous,
            stream_id=stream_id,
            version=version,
            type=type_,
            context=context_of(topic),
            data=self.data(bytes(data)),
            recorded_at=recorded_at,
            actor_id=actor,
            command=command,
            correlation_id=corr,
            causation_id=cause,
        )

    def from_rows(self, rows: list[tuple[Any, ...]], previous: int) -> list[EventEnvelope]:
        envelopes = []
        for row in rows:
            envelopes.append(self.from_row(row, previous))
            previous = row[0]
        return envelopes
