"""When a status webhook is due, and what it says (pure: folds and JSON, no I/O)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from smsgw.domain.message_state import MessageState, apply
from smsgw.events.envelope import new_event
from smsgw.v1 import events_pb2 as ev
from smsgw_receipt.webhooks.payload import EVENT_TYPE, status_changed, status_webhook, status_webhook_after

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
DS = ev.DeliveryState
URL = "https://example.com/sms/status"
OWNER = {
    "MessageQueued": "intake",
    "CancellationRequested": "intake",
    "MessageCanceled": "routing",
    "MessageRouted": "routing",
    "MessageSubmitted": "carrier-adapter",
    "CarrierAccepted": "carrier-adapter",
    "MessageFailed": "carrier-adapter",
    "DeliveryReported": "receipt",
}


def event(payload, seq, *, seconds=0, event_id=None, message_id="m1"):
    return new_event(
        payload,
        service=OWNER[payload.DESCRIPTOR.name],
        producer="test",
        message_id=message_id,
        account_id="acct",
        sequence=seq,
        event_id=event_id,
        occurred_at=T0 + timedelta(seconds=seconds),
    )


def queued(url=URL, **kw):
    q = ev.MessageQueued(
        to="+14155550100", content=ev.MessageContent(text="hi"), segments=1, status_callback_url=url, **kw
    )
    setattr(q, "from", "+14155550000")
    return q


def delivered_receipt(seq, seconds):
    return event(
        ev.DeliveryReported(
            carrier="smsc-sim", carrier_message_id="0", part_index=0, total_parts=1, state=DS.DELIVERY_STATE_DELIVERED
        ),
        seq,
        seconds=seconds,
    )


def happy_path(url=URL):
    return [
        event(queued(url), 1),
        event(ev.MessageRouted(carrier="smsc-sim", route="*"), 2, seconds=1),
        event(ev.MessageSubmitted(carrier="smsc-sim", attempt=1, segments=1), 3, seconds=2),
        event(ev.CarrierAccepted(carrier="smsc-sim", carrier_message_ids=["0"], segments=1), 4, seconds=3),
        delivered_receipt(5, 4),
    ]


def webhooks_of(events, **kw):
    """Folds the events one by one, as the receipt service does, collecting the webhooks due."""
    state, out = None, []
    for envelope in events:
        previous, state = state, apply(state, envelope)
        hook = status_webhook(previous, state, envelope, **kw)
        if hook is not None:
            out.append(hook)
    return out


def test_every_status_change_is_one_webhook_under_its_event_id():
    events = happy_path()
    hooks = webhooks_of(events)
    bodies = [json.loads(h.body) for h in hooks]
    assert [b["message"]["status"] for b in bodies] == ["QUEUED", "SENDING", "SENT", "DELIVERED"]
    assert [b["previous_status"] for b in bodies] == [None, "QUEUED", "SENDING", "SENT"]
    # MessageSubmitted changes no status: no webhook for event 3.
    assert [h.event_id for h in hooks] == [events[i].event_id for i in (0, 1, 3, 4)]
    assert all(b["event_id"] == h.event_id for b, h in zip(bodies, hooks))
    assert {h.url for h in hooks} == {URL} and {h.account_id for h in hooks} == {"acct"}


def test_the_body_has_the_documented_shape():
    body = json.loads(webhooks_of(happy_path())[-1].body)
    assert set(body) == {"event_id", "type", "occurred_at", "message", "previous_status"}
    assert body["type"] == EVENT_TYPE == "message.status"
    assert body["occurred_at"] == "2026-11-26T12:00:04Z"
    message = body["message"]
    assert message["id"] == "m1" and message["to"] == "+14155550100" and message["from"] == "+14155550000"
    assert message["carrier_message_ids"] == ["0"] and message["delivered_at"] == "2026-11-26T12:00:04Z"
    assert message["error_code"] == 0 and message["error_reason"] == ""  # present even when empty
    assert message["version"] == 5 and isinstance(message["version"], int)
    assert [t["status"] for t in message["transitions"]] == ["QUEUED", "SENDING", "SENT", "DELIVERED"]


def test_the_same_event_folded_again_yields_no_second_webhook():
    events = happy_path()
    state = None
    for envelope in events:
        state = apply(state, envelope)
    again = apply(state, events[-1])
    assert status_webhook(state, again, events[-1]) is None


def test_the_webhook_of_an_event_is_byte_for_byte_deterministic():
    """Reprocessing the log after a crash sends the very same webhooks: receivers dedupe them by id."""
    events = happy_path()
    assert webhooks_of(events) == webhooks_of(events)


def test_a_receipt_that_overtook_the_acceptance_is_one_webhook_with_both_steps_in_transitions():
    events = happy_path()[:3] + [delivered_receipt(4, 3)]
    hooks = webhooks_of(events)
    last = json.loads(hooks[-1].body)
    assert last["previous_status"] == "SENDING" and last["message"]["status"] == "DELIVERED"
    assert [t["status"] for t in last["message"]["transitions"]][-2:] == ["SENT", "DELIVERED"]
    assert {t["event_id"] for t in last["message"]["transitions"][-2:]} == {hooks[-1].event_id}


def test_a_scheduled_message_starts_at_scheduled():
    future = ev.MessageQueued()
    future.send_at.FromDatetime(T0 + timedelta(hours=1))
    q = queued()
    q.send_at.CopyFrom(future.send_at)
    body = json.loads(webhooks_of([event(q, 1)])[0].body)
    assert body["message"]["status"] == "SCHEDULED" and body["previous_status"] is None


def test_a_failure_carries_the_error():
    events = [
        event(queued(), 1),
        event(ev.MessageRouted(carrier="smsc-sim"), 2, seconds=1),
        event(
            ev.MessageFailed(
                carrier="smsc-sim",
                error_code=500,
                reason="CARRIER_REJECTED",
                message="refused",
                carrier_error="0x0000000B",
            ),
            3,
            seconds=2,
        ),
    ]
    body = json.loads(webhooks_of(events)[-1].body)
    assert body["message"]["status"] == "FAILED"
    assert body["message"]["error_code"] == 500 and body["message"]["error_reason"] == "CARRIER_REJECTED"


def test_without_any_url_nothing_is_due():
    assert webhooks_of(happy_path(url="")) == []


def test_the_account_default_url_applies_when_the_message_names_none():
    hooks = webhooks_of(happy_path(url=""), account_default_url="https://acct.example/hooks")
    assert len(hooks) == 4 and {h.url for h in hooks} == {"https://acct.example/hooks"}


def test_the_message_url_wins_over_the_account_default():
    hooks = webhooks_of(happy_path(), account_default_url="https://acct.example/hooks")
    assert {h.url for h in hooks} == {URL}


def test_status_changed_ignores_events_that_move_nothing():
    empty = MessageState(message_id="m1", account_id="acct")
    assert not status_changed(None, empty)
    assert not status_changed(empty, empty)


def test_a_state_of_another_message_is_refused():
    events = happy_path()
    state = apply(None, events[0])
    with pytest.raises(ValueError):
        status_webhook(None, state, event(queued(), 1, message_id="m2"))


def scheduled_queued():
    q = queued()
    q.send_at.FromDatetime(T0 + timedelta(hours=1))
    return q


@pytest.mark.parametrize(
    "events",
    [
        happy_path(),
        happy_path()[:3] + [delivered_receipt(4, 3)],  # receipt overtook acceptance
        [event(scheduled_queued(), 1), event(ev.MessageCanceled(reason="by client"), 2, seconds=1)],
        happy_path() + [delivered_receipt(6, 9)],  # a late second receipt
    ],
    ids=["happy", "overtaken", "scheduled-canceled", "late-receipt"],
)
def test_the_state_after_an_event_alone_gives_the_same_webhooks(events):
    """For consumers without the previous state: each transition names the event that made it."""
    state, with_previous, after_only = None, [], []
    for envelope in events:
        previous, state = state, apply(state, envelope)
        with_previous.append(status_webhook(previous, state, envelope))
        after_only.append(status_webhook_after(state, envelope))
    assert after_only == with_previous
    assert any(after_only)
