"""What routing does with each event of a message (pure).

The per-message record is all routing remembers; it lives in a faust table with
a changelog, so a restarted or rescheduled worker picks up exactly where the
previous one stopped, including messages held for a later send_at.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from smsgw.domain.routes import MessageFacts, RouteTable
from smsgw.events.envelope import derived_id
from smsgw.v1 import events_pb2 as ev

HELD = "held"  # scheduled for later
DISPATCHED = "dispatched"
CANCELED = "canceled"
CLOSED = "closed"  # expired or unroutable


@dataclass(frozen=True, slots=True)  # one per message for the retention window (an hour)
class RoutingRecord:
    state: str
    queued_event: bytes = b""  # the MessageQueued envelope, to dispatch a held message later
    send_at: float = 0.0  # epoch seconds
    decided_at: float = 0.0

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "state": self.state,
                "queued_event": self.queued_event.hex(),
                "send_at": self.send_at,
                "decided_at": self.decided_at,
            }
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes | None) -> RoutingRecord | None:
        if not data:
            return None
        d = json.loads(data)
        return cls(
            state=d["state"],
            queued_event=bytes.fromhex(d["queued_event"]),
            send_at=d["send_at"],
            decided_at=d["decided_at"],
        )


@dataclass(frozen=True)
class Decision:
    """Events to append, an optional dispatch (carrier name), and the record to keep."""

    record: RoutingRecord | None
    events: list = field(default_factory=list)  # (payload, event_id, sequence)
    dispatch_carrier: str = ""
    route: str = ""
    fallback_carriers: tuple[str, ...] = ()


def _all_healthy(_carrier: str) -> bool:
    return True


def on_queued(
    envelope: ev.EventEnvelope,
    record: RoutingRecord | None,
    table: RouteTable,
    now: datetime,
    healthy: Callable[[str], bool] = _all_healthy,
) -> Decision:
    if record is not None:
        return Decision(record=record)  # a replayed or duplicated MessageQueued: already decided
    queued = envelope.message_queued
    if queued.HasField("send_at") and queued.send_at.ToDatetime(tzinfo=UTC) > now:
        return Decision(
            record=RoutingRecord(
                state=HELD,
                queued_event=envelope.SerializeToString(),
                send_at=queued.send_at.ToNanoseconds() / 1e9,
                decided_at=now.timestamp(),
            )
        )
    return route_now(envelope, table, now, healthy)


def facts_of(envelope: ev.EventEnvelope, table: RouteTable | None = None) -> MessageFacts:
    """What the route table matches a queued message on (its number and id only, for a table of
    prefixes alone: the rest would never be read)."""
    queued = envelope.message_queued
    if table is not None and table.prefix_only:
        return MessageFacts(to=queued.to, message_id=envelope.message_id)
    return MessageFacts(
        to=queued.to,
        sender=getattr(queued, "from"),
        account=envelope.account_id,
        tags=frozenset(queued.tags),
        message_id=envelope.message_id,
    )


def route_now(
    envelope: ev.EventEnvelope,
    table: RouteTable,
    now: datetime,
    healthy: Callable[[str], bool] = _all_healthy,
) -> Decision:
    queued = envelope.message_queued
    cause = envelope.event_id
    if queued.HasField("expires_at") and queued.expires_at.ToDatetime(tzinfo=UTC) <= now:
        return Decision(
            record=RoutingRecord(state=CLOSED, decided_at=now.timestamp()),
            events=[
                (
                    ev.MessageExpired(reason="validity period ended before the message could be sent"),
                    derived_id(cause, "expired"),
                    envelope.sequence + 1,
                )
            ],
        )
    choice = table.choose(facts_of(envelope, table), healthy)
    if choice is None:
        return Decision(
            record=RoutingRecord(state=CLOSED, decided_at=now.timestamp()),
            events=[
                (
                    ev.RoutingFailed(
                        error_code=500,
                        reason="NO_ROUTE",
                        message=f"no route to {queued.to[:4]}…; add a route that matches it "
                        "(smsgw routes explain shows why none does)",
                    ),
                    derived_id(cause, "routed"),
                    envelope.sequence + 1,
                )
            ],
        )
    return Decision(
        record=RoutingRecord(state=DISPATCHED, decided_at=now.timestamp()),
        events=[
            (
                ev.MessageRouted(
                    carrier=choice.carrier,
                    route=choice.route.name,
                    sender=choice.route.rewritten_sender(getattr(queued, "from")) or "",
                ),
                derived_id(cause, "routed"),
                envelope.sequence + 1,
            )
        ],
        dispatch_carrier=choice.carrier,
        route=choice.route.name,
        fallback_carriers=choice.route.fallbacks(choice.carrier),
    )


def on_cancellation_requested(envelope: ev.EventEnvelope, record: RoutingRecord | None, now: datetime) -> Decision:
    cause = envelope.event_id
    if record is not None and record.state == HELD:
        return Decision(
            record=RoutingRecord(state=CANCELED, decided_at=now.timestamp()),
            events=[
                (
                    ev.MessageCanceled(reason=envelope.cancellation_requested.reason),
                    derived_id(cause, "cancel-outcome"),
                    envelope.sequence + 1,
                )
            ],
        )
    why = {
        DISPATCHED: "already handed to a carrier",
        CANCELED: "already canceled",
        CLOSED: "already expired or failed",
    }.get(record.state if record else "", "not known to routing yet")
    return Decision(
        record=record,
        events=[(ev.CancellationRejected(reason=why), derived_id(cause, "cancel-outcome"), envelope.sequence + 1)],
    )


def due(record: RoutingRecord, now: datetime) -> bool:
    return record.state == HELD and record.send_at <= now.timestamp()


def due_at(record: RoutingRecord | None) -> float | None:
    """When a held message's time comes (epoch seconds); None for a record that waits for nothing."""
    return record.send_at if record is not None and record.state == HELD else None


#: How long the record of a settled message (dispatched, canceled, expired, unroutable) is kept
#: by default. It is what makes a MessageQueued read again harmless (a consumer replaying after a
#: crash, a producer retry, intake's redrive of a message it saw QUEUED): all of those come
#: within minutes; an hour bounds the table to an hour's messages instead of every message ever.
DEFAULT_RECORD_RETENTION = 3600.0


def forget_at(record: RoutingRecord | None, retention: float) -> float | None:
    """When a settled message's record may go (epoch seconds); None while it still matters (held)."""
    if record is None or record.state == HELD:
        return None
    return record.decided_at + retention


def forgettable(record: RoutingRecord | None, retention: float, now: datetime) -> bool:
    at = forget_at(record, retention)
    return at is not None and at <= now.timestamp()


def internal_failure(envelope: ev.EventEnvelope, error: Exception) -> Decision:
    """An unexpected error while routing: the message fails visibly (error table 400)."""
    return Decision(
        record=RoutingRecord(state=CLOSED),
        events=[
            (
                ev.RoutingFailed(
                    error_code=400,
                    reason="ROUTING_ERROR",
                    message=f"server-side error while routing: {type(error).__name__}",
                ),
                derived_id(envelope.event_id, "routed"),
                envelope.sequence + 1,
            )
        ],
    )
