"""The message state is a pure fold: replay, dedupe, monotonic status, multipart receipts."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta

import pytest

from smsgw.domain import status as st
from smsgw.domain.message_state import apply, fold
from smsgw.events.envelope import EventOwnershipError, new_event
from smsgw.v1 import events_pb2 as ev

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
DS = ev.DeliveryState
OWNER = {
    "MessageQueued": "intake",
    "CancellationRequested": "intake",
    "MessageCanceled": "routing",
    "CancellationRejected": "routing",
    "MessageRouted": "routing",
    "RoutingFailed": "routing",
    "MessageExpired": "routing",
    "MessageSubmitted": "carrier-adapter",
    "CarrierAccepted": "carrier-adapter",
    "MessageFailed": "carrier-adapter",
    "MessageRerouted": "carrier-adapter",
    "DispatchExpired": "carrier-adapter",
    "DispatchDeferred": "carrier-adapter",
    "SubmitAttemptFailed": "carrier-adapter",
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


def queued(**kw):
    q = ev.MessageQueued(to="+14155550100", content=ev.MessageContent(text="hi"), segments=kw.pop("segments", 1), **kw)
    setattr(q, "from", "+14155550000")
    return q


def happy_path(parts=1):
    events = [
        event(queued(segments=parts), 1),
        event(ev.MessageRouted(carrier="smsc-sim", route="*->smsc-sim"), 2, seconds=1),
        event(ev.MessageSubmitted(carrier="smsc-sim", attempt=1, segments=parts), 3, seconds=2),
        event(
            ev.CarrierAccepted(carrier="smsc-sim", carrier_message_ids=[str(i) for i in range(parts)], segments=parts),
            4,
            seconds=3,
        ),
    ]
    for part in range(parts):
        events.append(
            event(
                ev.DeliveryReported(
                    carrier="smsc-sim",
                    carrier_message_id=str(part),
                    part_index=part,
                    total_parts=parts,
                    state=DS.DELIVERY_STATE_DELIVERED,
                ),
                5,
                seconds=4 + part,
            )
        )
    return events


def test_happy_path_reaches_delivered_with_every_transition_time():
    state = fold(happy_path())
    assert state.status == st.DELIVERED
    assert [t.status for t in state.transitions] == [st.QUEUED, st.SENDING, st.SENT, st.DELIVERED]
    assert state.reached_at(st.SENT) == T0 + timedelta(seconds=3)
    assert state.carrier == "smsc-sim" and state.carrier_message_ids == ("0",)
    assert state.version == 5
    assert state.sender == "+14155550000" and state.body_text == "hi"


def test_replaying_the_same_events_twice_changes_nothing():
    events = happy_path()
    once = fold(events)
    twice = fold(events, once)
    assert twice == once


def test_status_never_moves_backwards_on_late_reports():
    events = happy_path()
    late_sent = event(ev.CarrierAccepted(carrier="smsc-sim", carrier_message_ids=["0"], segments=1), 4, seconds=9)
    late_routed = event(ev.MessageRouted(carrier="other"), 2, seconds=10)
    state = fold(events + [late_sent, late_routed])
    assert state.status == st.DELIVERED
    assert state.carrier == "smsc-sim"
    assert state.version == 7  # recorded in the history, no effect on status


def test_receipt_before_submit_result_still_ends_delivered():
    e = happy_path()
    reordered = [e[0], e[1], e[2], e[4], e[3]]
    state = fold(reordered)
    assert state.status == st.DELIVERED
    assert state.carrier_message_ids == ("0",)


def test_multipart_is_delivered_only_when_every_part_is():
    events = happy_path(parts=3)
    partial = fold(events[:-1])
    assert partial.status == st.SENT
    assert fold(events).status == st.DELIVERED


def test_one_undeliverable_part_makes_the_message_undelivered_with_reason():
    events = happy_path(parts=2)
    events[-1] = event(
        ev.DeliveryReported(
            carrier="smsc-sim",
            carrier_message_id="1",
            part_index=1,
            total_parts=2,
            state=DS.DELIVERY_STATE_UNDELIVERABLE,
            carrier_state="UNDELIV",
            carrier_error="005",
        ),
        5,
        seconds=8,
    )
    state = fold(events)
    assert state.status == st.UNDELIVERED
    assert "part 2/2" in state.error_message and "005" in state.error_message
    assert state.error_reason == "CARRIER_UNDELIVERABLE"


def test_intermediate_receipts_do_not_change_status():
    events = happy_path()[:4] + [
        event(ev.DeliveryReported(part_index=0, total_parts=1, state=DS.DELIVERY_STATE_ACCEPTED), 5)
    ]
    assert fold(events).status == st.SENT


def test_scheduled_message_and_cancellation():
    q = queued()
    q.send_at.FromDatetime(T0 + timedelta(hours=1))
    state = fold(
        [event(q, 1), event(ev.CancellationRequested(reason="x"), 2), event(ev.MessageCanceled(reason="x"), 3)]
    )
    assert [t.status for t in state.transitions] == [st.QUEUED, st.SCHEDULED, st.CANCELED]
    assert state.cancellation_outcome == "CANCELED"


def test_second_message_queued_for_the_same_id_is_an_idempotent_replay():
    first = event(queued(), 1, event_id="a")
    second_q = queued()
    second_q.content.text = "other"
    second = event(second_q, 1, event_id="b", seconds=5)
    state = fold([first, second])
    assert state.body_text == "hi" and state.created_at == T0


def test_failure_is_final():
    events = happy_path()[:3] + [
        event(
            ev.MessageFailed(
                carrier="smsc-sim", error_code=500, reason="CARRIER_REJECTED", message="no", carrier_error="0x0000000B"
            ),
            4,
        ),
        event(ev.DeliveryReported(part_index=0, total_parts=1, state=DS.DELIVERY_STATE_DELIVERED), 5),
    ]
    state = fold(events)
    assert state.status == st.FAILED and state.error_code == 500 and "0x0000000B" in state.error_message


def test_unknown_future_event_type_is_counted_but_harmless():
    envelope = ev.EventEnvelope(event_id="future", message_id="m1", account_id="acct", sequence=9)
    envelope.occurred_at.FromDatetime(T0)
    state = apply(fold(happy_path()), envelope)
    assert state.status == st.DELIVERED and state.version == 6


@pytest.mark.parametrize("seed", range(20))
def test_any_duplication_of_the_log_gives_the_same_state(seed):
    rng = random.Random(seed)
    events = happy_path(parts=2)
    noisy = list(itertools.chain.from_iterable([e] * rng.randint(1, 3) for e in events))
    assert fold(noisy) == fold(events)


def test_event_ownership_is_enforced():
    with pytest.raises(EventOwnershipError):
        new_event(
            ev.MessageRouted(carrier="x"), service="intake", producer="t", message_id="m", account_id="a", sequence=2
        )


def test_the_folds_copy_is_frozen_and_refuses_unknown_fields():
    from dataclasses import FrozenInstanceError

    from smsgw.domain.message_state import MessageState, replace

    state = MessageState(message_id="m1", account_id="acct")
    copy = replace(state, status=st.QUEUED, to="+14155550100")
    assert (copy.status, copy.to, copy.message_id) == (st.QUEUED, "+14155550100", "m1")
    assert state.status == st.UNSPECIFIED  # the original is untouched
    assert copy == MessageState(message_id="m1", account_id="acct", status=st.QUEUED, to="+14155550100")
    with pytest.raises(FrozenInstanceError):
        copy.status = st.SENT
    with pytest.raises(TypeError, match="statsu"):
        replace(state, statsu=st.SENT)


def test_a_rerouted_message_stays_sending_with_its_new_carrier_and_ends_with_that_carriers_outcome():
    events = [
        event(queued(), 1),
        event(ev.MessageRouted(carrier="twilio-sim", route="pair"), 2, seconds=1),
        event(ev.MessageSubmitted(carrier="twilio-sim", attempt=1, segments=1), 3, seconds=2),
        event(ev.SubmitAttemptFailed(carrier="twilio-sim", attempt=1, reason="NOT_CONNECTED"), 3, seconds=2),
        event(
            ev.MessageRerouted(from_carrier="twilio-sim", carrier="smsc-sim", reason="NOT_CONNECTED", attempts=3),
            4,
            seconds=32,
        ),
    ]
    rerouted = fold(events)
    assert rerouted.status == st.SENDING and rerouted.carrier == "smsc-sim"
    accepted = event(ev.CarrierAccepted(carrier="smsc-sim", carrier_message_ids=["7"], segments=1), 6, seconds=33)
    assert fold([*events, accepted]).status == st.SENT
    # The new carrier's outcome read before the reroute (a replay): the carrier stays the new one.
    late = fold([*events[:4], accepted, events[4]])
    assert late.status == st.SENT and late.carrier == "smsc-sim"


def test_a_message_whose_validity_ends_waiting_for_its_carrier_is_expired_and_says_why():
    events = [
        event(queued(), 1),
        event(ev.MessageRouted(carrier="smsc-sim", route="all"), 2, seconds=1),
        event(ev.SubmitAttemptFailed(carrier="smsc-sim", attempt=1, reason="NOT_CONNECTED"), 3, seconds=2),
        event(ev.DispatchExpired(carrier="smsc-sim", attempts=9, reason="NOT_CONNECTED"), 4, seconds=60),
    ]
    expired = fold(events)
    assert expired.status == st.EXPIRED and expired.error_reason == "EXPIRED"
    assert (
        expired.error_message == "validity ended while waiting for carrier smsc-sim, after 9 attempts (NOT_CONNECTED)"
    )
    never_tried = fold([*events[:2], event(ev.DispatchExpired(carrier="smsc-sim", in_doubt=False), 4, seconds=60)])
    assert never_tried.status == st.EXPIRED and "before any attempt" in never_tried.error_message
    # Final: a late acceptance (an in-doubt attempt the carrier did take) is in the history only.
    late = event(ev.CarrierAccepted(carrier="smsc-sim", carrier_message_ids=["7"], segments=1), 4, seconds=61)
    assert fold([*events, late]).status == st.EXPIRED


def test_a_route_that_rewrote_the_sender_shows_the_sender_the_recipient_sees():
    events = [event(queued(), 1), event(ev.MessageRouted(carrier="smsc-sim", route="us", sender="+14155550123"), 2)]
    assert fold(events).sender == "+14155550123"
    assert fold([events[0], event(ev.MessageRouted(carrier="smsc-sim", route="us"), 2)]).sender == "+14155550000"


def test_folding_an_event_never_changes_the_state_it_was_given():
    """`apply` completes its handler's fresh copy in place; no state it was handed may change."""
    events = [
        *happy_path(parts=2),
        event(ev.MessageRerouted(carrier="other"), 6, seconds=6),
        event(ev.MessageFailed(carrier="other", reason="X", message="no"), 7, seconds=7),
        event(ev.MessageCanceled(reason="asked"), 8, seconds=8),
        event(ev.CancellationRejected(reason="late"), 9, seconds=9),
        event(ev.MessageExpired(reason="validity"), 10, seconds=10),
        event(ev.RoutingFailed(reason="NO_ROUTE", message="none"), 11, seconds=11),
        event(ev.DispatchExpired(carrier="c", attempts=2, reason="down"), 12, seconds=12),
    ]
    states = [None]
    for envelope in events:
        before = states[-1]
        snapshot = None if before is None else dict(before.__dict__)
        after = apply(before, envelope)
        assert after is not before
        if before is not None:
            assert before.__dict__ == snapshot, envelope.WhichOneof("payload")
        states.append(after)
    # and every state the fold handed out is still what it was when handed out
    assert [s.version for s in states[1:]] == list(range(1, len(events) + 1))


def test_every_event_type_is_either_folded_or_known_to_change_no_message():
    """A new payload type must be given a handler or added here on purpose."""
    from smsgw.domain.message_state import _HANDLERS

    payloads = {f.name for f in ev.EventEnvelope.DESCRIPTOR.oneofs_by_name["payload"].fields}
    assert set(_HANDLERS) <= payloads
    assert payloads - set(_HANDLERS) == {
        "cancellation_requested",  # a request; routing answers with MessageCanceled or CancellationRejected
        "submit_attempt_failed",  # one attempt in the history; the message's status waits for the outcome
        "dispatch_deferred",  # the message waits on the delay topic, still SENDING with its carrier
        "inbound_message_received",  # not an outbound message's event
        "recipient_opted_out",
        "recipient_opted_in",
    }
