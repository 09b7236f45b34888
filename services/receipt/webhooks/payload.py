"""What a status webhook says, and when one is due (pure: no I/O).

One event of a message's log yields at most one webhook: when folding it moved
the message's status. Its id is the event's id, so the same event processed
twice (a consumer restart, a redelivered record) yields the same webhook id and
the receiver drops the copy. An event that passes through two statuses at once
(a receipt that overtook the submit result: SENDING -> SENT -> DELIVERED) is
one webhook with the final status; every step is in `message.transitions`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from google.protobuf.json_format import MessageToDict

from smsgw.domain import status as st
from smsgw.domain.message_state import MessageState
from smsgw.v1 import events_pb2 as ev
from smsgw.views import message_view

EVENT_TYPE = "message.status"


@dataclass(frozen=True)
class Webhook:
    """One signed POST to make: `body` is sent byte for byte as signed."""

    url: str
    account_id: str
    event_id: str
    body: bytes


def status_changed(previous: MessageState | None, current: MessageState) -> bool:
    before = previous.status if previous is not None else st.UNSPECIFIED
    return current.status != before and current.status != st.UNSPECIFIED


def callback_url(state: MessageState, account_default: str = "") -> str:
    """The message's own URL wins over the account's default."""
    return state.status_callback_url or account_default


def message_dict(state: MessageState) -> dict:
    """The public Message as GetMessage's JSON: proto field names, enum names, every field present."""
    return MessageToDict(
        message_view(state),
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
        unquote_int64_if_possible=True,  # version as a JSON number, so receivers can compare it
    )


def build_body(before: int, current: MessageState, envelope: ev.EventEnvelope) -> dict:
    """`before`: the status the event moved the message from (UNSPECIFIED for its first)."""
    return {
        "event_id": envelope.event_id,
        "type": EVENT_TYPE,
        "occurred_at": envelope.occurred_at.ToJsonString(),
        "message": message_dict(current),
        "previous_status": None if before == st.UNSPECIFIED else st.status_name(before),
    }


def encode_body(body: dict) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def status_webhook(
    previous: MessageState | None,
    current: MessageState,
    envelope: ev.EventEnvelope,
    *,
    account_default_url: str = "",
) -> Webhook | None:
    """The webhook `envelope` calls for, given the state before and after folding it; None if none is due."""
    if envelope.message_id != current.message_id:
        raise ValueError(f"event {envelope.event_id} is for message {envelope.message_id}, not {current.message_id}")
    url = callback_url(current, account_default_url)
    if not url or not status_changed(previous, current):
        return None
    before = previous.status if previous is not None else st.UNSPECIFIED
    return Webhook(
        url=url,
        account_id=current.account_id,
        event_id=envelope.event_id,
        body=encode_body(build_body(before, current, envelope)),
    )


def status_before(current: MessageState, event_id: str) -> int | None:
    """The status event `event_id` moved the message from, read from `current.transitions`; None if that
    event moved no status. Every transition records the event that made it, so no earlier state is needed."""
    steps = [i for i, t in enumerate(current.transitions) if t.event_id == event_id]
    if not steps:
        return None
    return current.transitions[steps[0] - 1].status if steps[0] > 0 else st.UNSPECIFIED


def status_webhook_after(
    current: MessageState,
    envelope: ev.EventEnvelope,
    *,
    account_default_url: str = "",
) -> Webhook | None:
    """The same webhook as `status_webhook`, decided from the state just after `envelope` alone.

    For a consumer that keeps no previous state (e.g. a listener of the projector, which hands over the
    state after each event). Unlike `status_webhook`, a copy of an event already folded yields its webhook
    again: the same id and body, which the dispatcher and the receiver drop.
    """
    if envelope.message_id != current.message_id:
        raise ValueError(f"event {envelope.event_id} is for message {envelope.message_id}, not {current.message_id}")
    url = callback_url(current, account_default_url)
    before = status_before(current, envelope.event_id)
    if not url or before is None:
        return None
    return Webhook(
        url=url,
        account_id=current.account_id,
        event_id=envelope.event_id,
        body=encode_body(build_body(before, current, envelope)),
    )
