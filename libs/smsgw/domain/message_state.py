"""A message's state as a pure fold over its events.

`apply(state, envelope)` never does I/O and never mutates: the same events give
the same state, which is how GetMessage answers after every replica lost its
memory. Events already applied (same event id) are ignored, so at-least-once
delivery of the log is harmless.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from smsgw.domain import status as st
from smsgw.events.envelope import to_datetime
from smsgw.v1 import events_pb2 as ev

DeliveryState = ev.DeliveryState

# Part states that end a part, and what the whole message becomes when one part ends so.
_PART_FAILURE_STATUS = {
    DeliveryState.DELIVERY_STATE_UNDELIVERABLE: st.UNDELIVERED,
    DeliveryState.DELIVERY_STATE_REJECTED: st.UNDELIVERED,
    DeliveryState.DELIVERY_STATE_DELETED: st.UNDELIVERED,
    DeliveryState.DELIVERY_STATE_EXPIRED: st.EXPIRED,
}
# Enum members looked up once: each `DeliveryState.X` is a call into protobuf's wrapper (~0.8 µs).
_PART_DELIVERED = DeliveryState.DELIVERY_STATE_DELIVERED
_NO_METADATA: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True)
class Transition:
    status: int
    at: datetime
    event_id: str


@dataclass(frozen=True)
class MessageState:
    message_id: str
    account_id: str
    to: str = ""
    sender: str = ""
    content: ev.MessageContent | None = None
    segments: int = 0
    encoding: int = 0
    segments_before_smart_encoding: int = 0
    send_at: datetime | None = None
    expires_at: datetime | None = None
    metadata: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    status_callback_url: str = ""
    idempotency_key: str = ""
    request_fingerprint: str = ""
    media_urls: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    priority: int = 0  # MessagePriority as asked; 0 is NORMAL
    status: int = st.UNSPECIFIED
    carrier: str = ""
    carrier_message_ids: tuple[str, ...] = ()
    error_code: int = 0
    error_reason: str = ""
    error_message: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None
    transitions: tuple[Transition, ...] = ()
    part_states: Mapping[int, int] = field(default_factory=lambda: MappingProxyType({}))
    # Ids of every event folded in: the dedupe set, and `version` is its size.
    applied_event_ids: frozenset[str] = frozenset()
    last_sequence: int = 0
    # Outcome of the latest cancellation request: "", "CANCELED" or "REJECTED".
    cancellation_outcome: str = ""
    cancellation_detail: str = ""

    @property
    def version(self) -> int:
        return len(self.applied_event_ids)

    @property
    def body_text(self) -> str:
        if self.content is None or self.content.WhichOneof("content") != "text":
            return ""
        return self.content.text

    def reached_at(self, status: int) -> datetime | None:
        for transition in self.transitions:
            if transition.status == status:
                return transition.at
        return None

    @property
    def is_final(self) -> bool:
        return st.is_final(self.status)


_FIELDS = frozenset(f.name for f in fields(MessageState))


def replace(state: MessageState, **changes) -> MessageState:
    """`dataclasses.replace` for the fold's hot path: a copy with `changes`, without `__init__`.

    A frozen dataclass's `__init__` sets its 30 fields one `object.__setattr__` at a time, and
    `dataclasses.replace` looks every field up again first: together a third of the fold's time,
    which intake pays for every event of every message. The copy is still frozen (assignment
    raises), and an unknown field still raises TypeError, as with `dataclasses.replace`.
    """
    if not _FIELDS.issuperset(changes):  # (`changes.keys() - _FIELDS` walks all 30 fields every call)
        raise TypeError(f"MessageState has no field(s) {sorted(changes.keys() - _FIELDS)}")
    copy = object.__new__(MessageState)
    values = copy.__dict__
    values.update(state.__dict__)
    values.update(changes)
    return copy


def occurred_at(envelope: ev.EventEnvelope) -> datetime:
    return to_datetime(envelope.occurred_at)


def apply(state: MessageState | None, envelope: ev.EventEnvelope) -> MessageState:
    """Folds one event into the state of its message."""
    if state is None:
        state = MessageState(message_id=envelope.message_id, account_id=envelope.account_id)
    event_id = envelope.event_id
    if event_id in state.applied_event_ids:
        return state
    at = occurred_at(envelope)
    kind = envelope.WhichOneof("payload")
    # An event type newer than this code (kind None), or one that records something without
    # changing the state (e.g. MessageSubmitted): counted, nothing else changes.
    handler = _HANDLERS.get(kind) if kind is not None else None
    next_state = state if handler is None else handler(getattr(envelope, kind), state, envelope, at)
    changes = {
        "applied_event_ids": state.applied_event_ids | {event_id},
        "last_sequence": max(state.last_sequence, envelope.sequence),
        "updated_at": at if state.updated_at is None or at > state.updated_at else state.updated_at,
    }
    if next_state is state:
        return replace(state, **changes)
    # A copy the handler made in this call, seen by no one yet: completed in place rather than
    # copied a second time (the fold's cost is mostly copies; intake folds every event).
    next_state.__dict__.update(changes)
    return next_state


def fold(events: Iterable[ev.EventEnvelope], state: MessageState | None = None) -> MessageState | None:
    for envelope in events:
        state = apply(state, envelope)
    return state


def _move(state: MessageState, proposed: int, envelope: ev.EventEnvelope, at: datetime, **changes) -> MessageState:
    """Applies `changes` and the new status only if the status may move there."""
    if not st.can_move(state.status, proposed):
        return state
    transition = Transition(status=proposed, at=at, event_id=envelope.event_id)
    return replace(state, status=proposed, transitions=state.transitions + (transition,), **changes)


Handler = Callable[[Any, MessageState, ev.EventEnvelope, datetime], MessageState]

#: Payload field name (the envelope's `payload` oneof) -> how that event changes a message.
#: A handler returns `state` itself when nothing changes, else a new copy (never a state it
#: did not make in this call: `apply` completes that copy in place).
_HANDLERS: dict[str, Handler] = {}


def _handles(payload_type) -> Callable[[Handler], Handler]:
    field_name = next(
        f.name
        for f in ev.EventEnvelope.DESCRIPTOR.oneofs_by_name["payload"].fields
        if f.message_type is payload_type.DESCRIPTOR
    )

    def register(handler: Handler) -> Handler:
        _HANDLERS[field_name] = handler
        return handler

    return register


@_handles(ev.MessageQueued)
def _(payload: ev.MessageQueued, state: MessageState, envelope: ev.EventEnvelope, at: datetime) -> MessageState:
    if state.status != st.UNSPECIFIED:
        # A second MessageQueued for the same id is an idempotent replay: the first stands.
        return state
    send_at = payload.send_at.ToDatetime(tzinfo=UTC) if payload.HasField("send_at") else None
    expires_at = payload.expires_at.ToDatetime(tzinfo=UTC) if payload.HasField("expires_at") else None
    content = ev.MessageContent()
    content.CopyFrom(payload.content)
    queued = replace(
        state,
        account_id=envelope.account_id,
        to=payload.to,
        sender=getattr(payload, "from"),
        content=content,
        segments=payload.segments,
        encoding=payload.encoding,
        segments_before_smart_encoding=payload.segments_before_smart_encoding,
        send_at=send_at,
        expires_at=expires_at,
        metadata=MappingProxyType(dict(payload.metadata)) if payload.metadata else _NO_METADATA,
        status_callback_url=payload.status_callback_url,
        idempotency_key=payload.idempotency_key,
        request_fingerprint=payload.request_fingerprint,
        media_urls=tuple(payload.media_urls) if payload.media_urls else (),
        tags=tuple(payload.tags) if payload.tags else (),
        priority=payload.priority,
        created_at=at,
    )
    queued = _move(queued, st.QUEUED, envelope, at)
    if send_at is not None and send_at > at:
        queued = _move(queued, st.SCHEDULED, envelope, at)
    return queued


@_handles(ev.MessageCanceled)
def _(payload: ev.MessageCanceled, state: MessageState, envelope: ev.EventEnvelope, at: datetime) -> MessageState:
    return _move(
        replace(state, cancellation_outcome="CANCELED", cancellation_detail=payload.reason),
        st.CANCELED,
        envelope,
        at,
    )


@_handles(ev.CancellationRejected)
def _(payload: ev.CancellationRejected, state: MessageState, envelope: ev.EventEnvelope, at: datetime) -> MessageState:
    return replace(state, cancellation_outcome="REJECTED", cancellation_detail=payload.reason)


@_handles(ev.MessageRouted)
def _(payload: ev.MessageRouted, state: MessageState, envelope: ev.EventEnvelope, at: datetime) -> MessageState:
    # A route that rewrites senders: `from` is what the recipient sees (the request's is on MessageQueued).
    return _move(state, st.SENDING, envelope, at, carrier=payload.carrier, sender=payload.sender or state.sender)


@_handles(ev.RoutingFailed)
def _(payload: ev.RoutingFailed, state: MessageState, envelope: ev.EventEnvelope, at: datetime) -> MessageState:
    return _move(
        state,
        st.FAILED,
        envelope,
        at,
        error_code=payload.error_code,
        error_reason=payload.reason,
        error_message=payload.message,
    )


@_handles(ev.MessageExpired)
def _(payload: ev.MessageExpired, state: MessageState, envelope: ev.EventEnvelope, at: datetime) -> MessageState:
    return _move(state, st.EXPIRED, envelope, at, error_reason="EXPIRED", error_message=payload.reason)


@_handles(ev.DispatchExpired)
def _(payload: ev.DispatchExpired, state: MessageState, envelope: ev.EventEnvelope, at: datetime) -> MessageState:
    waited = f"after {payload.attempts} attempts ({payload.reason})" if payload.attempts else "before any attempt"
    doubt = "; an attempt may have reached the carrier" if payload.in_doubt else ""
    return _move(
        state,
        st.EXPIRED,
        envelope,
        at,
        error_reason="EXPIRED",
        error_message=f"validity ended while waiting for carrier {payload.carrier}, {waited}{doubt}",
    )


@_handles(ev.MessageRerouted)
def _(payload: ev.MessageRerouted, state: MessageState, envelope: ev.EventEnvelope, at: datetime) -> MessageState:
    # Still SENDING, now with another carrier; a later outcome of the new carrier may come first
    # (it is written after this event, but a replay can reorder them): never undo it.
    if st.is_final(state.status) or state.status == st.SENT:
        return state
    return replace(state, carrier=payload.carrier)


@_handles(ev.MessageSubmitted)
def _(payload: ev.MessageSubmitted, state: MessageState, envelope: ev.EventEnvelope, at: datetime) -> MessageState:
    if state.carrier or st.is_final(state.status):
        return state
    return replace(state, carrier=payload.carrier)


@_handles(ev.CarrierAccepted)
def _(payload: ev.CarrierAccepted, state: MessageState, envelope: ev.EventEnvelope, at: datetime) -> MessageState:
    ids = tuple(payload.carrier_message_ids)
    if st.is_final(state.status):
        # A DLR can overtake the submit result; keep the ids for correlation and history.
        return replace(state, carrier_message_ids=state.carrier_message_ids or ids)
    return _move(
        replace(state, carrier=payload.carrier or state.carrier, carrier_message_ids=ids),
        st.SENT,
        envelope,
        at,
    )


@_handles(ev.MessageFailed)
def _(payload: ev.MessageFailed, state: MessageState, envelope: ev.EventEnvelope, at: datetime) -> MessageState:
    return _move(
        state,
        st.FAILED,
        envelope,
        at,
        error_code=payload.error_code,
        error_reason=payload.reason,
        error_message=payload.message + (f" (carrier error {payload.carrier_error})" if payload.carrier_error else ""),
    )


@_handles(ev.DeliveryReported)
def _(payload: ev.DeliveryReported, state: MessageState, envelope: ev.EventEnvelope, at: datetime) -> MessageState:
    part_states = dict(state.part_states)
    previous = part_states.get(payload.part_index)
    # A part's final report is kept; an intermediate one (ACCEPTED, ENROUTE) may be superseded.
    if previous is None or not _is_final_part_state(previous):
        part_states[payload.part_index] = payload.state
    state = replace(state, part_states=MappingProxyType(part_states))
    total = payload.total_parts if payload.total_parts > 0 else max(state.segments, 1)
    failure = _PART_FAILURE_STATUS.get(payload.state)
    if failure is not None:
        return _move(
            state,
            failure,
            envelope,
            at,
            error_code=500 if failure == st.UNDELIVERED else 0,
            error_reason="CARRIER_" + DeliveryState.Name(payload.state).removeprefix("DELIVERY_STATE_"),
            error_message=(
                f"part {payload.part_index + 1}/{total} reported {payload.carrier_state or 'failure'}"
                + (f" (err {payload.carrier_error})" if payload.carrier_error else "")
            ),
        )
    delivered = sum(1 for s in part_states.values() if s == _PART_DELIVERED)
    if delivered >= total:
        # Every part delivered; a DLR that overtook the submit result implies SENT as well.
        if st.rank(state.status) < st.rank(st.SENT):
            state = _move(state, st.SENT, envelope, at)
        return _move(state, st.DELIVERED, envelope, at)
    return state


def _is_final_part_state(state: int) -> bool:
    return state in _PART_FAILURE_STATUS or state == _PART_DELIVERED
