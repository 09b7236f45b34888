"""Building, identifying and (de)serialising events.

Each payload type has one owning service (the single writer of that kind of
fact). Derived events get deterministic ids so that re-processing a cause after
a crash produces the same event id, which every reader then ignores.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import uuid_utils
from google.protobuf.timestamp_pb2 import Timestamp

from smsgw.v1 import events_pb2 as ev

SCHEMA_VERSION = 1

# Which service may write each payload (the oneof field name of EventEnvelope).
EVENT_OWNERS: dict[str, str] = {
    "message_queued": "intake",
    "cancellation_requested": "intake",
    "message_canceled": "routing",
    "cancellation_rejected": "routing",
    "message_routed": "routing",
    "routing_failed": "routing",
    "message_expired": "routing",
    "message_submitted": "carrier-adapter",
    "carrier_accepted": "carrier-adapter",
    "message_failed": "carrier-adapter",
    "submit_attempt_failed": "carrier-adapter",
    "message_rerouted": "carrier-adapter",
    "dispatch_expired": "carrier-adapter",
    "dispatch_deferred": "carrier-adapter",
    "delivery_reported": "receipt",
    "inbound_message_received": "receipt",
    "recipient_opted_out": "receipt",
    "recipient_opted_in": "receipt",
}

_PAYLOAD_FIELDS = {
    f.message_type.full_name: f.name for f in ev.EventEnvelope.DESCRIPTOR.oneofs_by_name["payload"].fields
}

# Derived ids are uuid_utils' uuid5 in this namespace (RFC 9562 name-based ids, the same as the
# standard library's for the same input): 0.4 µs an id against 4.5, and every service derives
# several ids a message.
_NAMESPACE = uuid_utils.UUID("7b0f3c52-5a52-4c1e-9a63-5f1d2c7c9a10")


class EventOwnershipError(RuntimeError):
    """A service tried to write an event type another service owns."""


def derived_id(cause_id: str, kind: str, discriminator: str = "") -> str:
    """Same cause, same kind, same id: makes re-processing idempotent."""
    return str(uuid_utils.uuid5(_NAMESPACE, f"{cause_id}/{kind}/{discriminator}"))


def new_message_id() -> str:
    """A new message's id: a UUIDv7 (RFC 9562), whose leading bits are the time in milliseconds.

    Ids that grow with time keep every store's B-tree inserts at its right edge: in the message
    store a random (v4) id dirtied a random page of the messages and message_events keys for every
    event, 2-3x the write cost of a time-ordered one (docs/benchmarks.md, 2026-12-04). The id says
    when the message was accepted, which its owner sees anyway (created_at); 74 bits stay random.
    """
    return str(uuid_utils.uuid7())


def random_id() -> str:
    """A new random id (a UUIDv4, RFC 9562) as text: an event's, a carrier report's. By
    uuid_utils (Rust's `uuid` with `fast-rng`: rand's thread-local ChaCha generator, seeded from
    the system's source and cryptographically secure): 0.3 µs an id against the standard
    library's 3.6, which reads the system's source for every id."""
    return str(uuid_utils.uuid4())


def message_id_for_idempotency_key(account_id: str, idempotency_key: str) -> str:
    """Two replicas given the same key produce the same message id, without talking to each other."""
    return str(uuid_utils.uuid5(_NAMESPACE, f"idempotency/{account_id}/{idempotency_key}"))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)


def timestamp(at: datetime | None = None) -> Timestamp:
    """`at` (default now) as a Timestamp; a naive datetime is taken as UTC, as FromDatetime does.

    Computed from the difference to the epoch: protobuf's FromDatetime is pure Python with
    calendar arithmetic, and showed up at 2-6 % of each service's CPU (several per message)."""
    return fill_timestamp(Timestamp(), at or datetime.now(UTC))


def fill_timestamp(ts: Timestamp, at: datetime) -> Timestamp:
    """Sets `ts` (e.g. a message's field, in place) to `at`; cheaper than building one and copying it in."""
    delta = at - (_NAIVE_EPOCH if at.tzinfo is None else _EPOCH)
    ts.seconds = delta.days * 86_400 + delta.seconds
    ts.nanos = delta.microseconds * 1000
    return ts


def to_datetime(ts: Timestamp) -> datetime:
    """The inverse of `timestamp`: an aware UTC datetime (microseconds, like ToDatetime)."""
    # Positional arguments: timedelta's keyword parsing is half of this call's cost.
    return _EPOCH + timedelta(0, ts.seconds, ts.nanos // 1000)


def new_event(
    payload,
    *,
    service: str,
    producer: str,
    message_id: str,
    account_id: str,
    sequence: int,
    event_id: str | None = None,
    causation_id: str = "",
    trace_context: dict[str, str] | None = None,
    occurred_at: datetime | None = None,
) -> ev.EventEnvelope:
    """Wraps a payload in the envelope, checking that `service` owns this event type."""
    kind = _PAYLOAD_FIELDS[payload.DESCRIPTOR.full_name]
    owner = EVENT_OWNERS[kind]
    if owner != service:
        raise EventOwnershipError(f"{service} may not write {payload.DESCRIPTOR.name}; {owner} owns it")
    envelope = ev.EventEnvelope(
        event_id=event_id or random_id(),
        message_id=message_id,
        account_id=account_id,
        sequence=sequence,
        type=payload.DESCRIPTOR.full_name,
        schema_version=SCHEMA_VERSION,
        occurred_at=timestamp(occurred_at),
        producer=producer,
        trace_context=trace_context or {},
        causation_id=causation_id,
    )
    getattr(envelope, kind).CopyFrom(payload)
    return envelope


def payload_kind(envelope: ev.EventEnvelope) -> str | None:
    return envelope.WhichOneof("payload")


def encode(message) -> bytes:
    return message.SerializeToString(deterministic=True)


def decode_event(data: bytes) -> ev.EventEnvelope:
    envelope = ev.EventEnvelope()
    envelope.ParseFromString(data)
    return envelope
