"""intake's append breaker: refused at once while the log takes no write, one trial at a time, back
to normal on the first confirmed append."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2

from services.intake.append_breaker import AppendBreaker, BreakerState
from smsgw.domain import errors as de
from smsgw.grpcx.errors import to_rpc_status


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_closed_lets_every_append_through_and_a_confirmed_one_keeps_it_closed():
    breaker = AppendBreaker(clock=Clock())
    for _ in range(3):
        assert breaker.admit() is False
        breaker.succeeded(False)
    assert breaker.state is BreakerState.CLOSED and breaker.refused == 0


def test_an_unconfirmed_append_opens_it_and_later_calls_are_refused_with_the_time_left():
    clock = Clock()
    breaker = AppendBreaker(first_open=1.0, clock=clock)
    breaker.admit()
    breaker.failed(False)
    assert breaker.state is BreakerState.OPEN and breaker.opened == 1
    clock.now += 0.25
    with pytest.raises(de.EventLogUnavailable) as refused:
        breaker.admit()
    assert refused.value.retry_after == pytest.approx(0.75)
    assert refused.value.metadata["retry_after_ms"] == "751"
    assert "NOT accepted" in refused.value.message
    assert breaker.refused == 1


def test_one_trial_after_the_wait_others_refused_meanwhile_its_success_closes():
    clock = Clock()
    breaker = AppendBreaker(first_open=1.0, clock=clock)
    breaker.failed(False)
    clock.now += 1.0
    assert breaker.admit() is True  # the trial
    assert breaker.state is BreakerState.HALF_OPEN
    with pytest.raises(de.EventLogUnavailable) as refused:
        breaker.admit()  # a second caller while the trial is out
    assert refused.value.retry_after == pytest.approx(0.5)
    breaker.succeeded(True)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.admit() is False


def test_a_failed_trial_doubles_the_wait_up_to_the_maximum_and_success_resets_it():
    clock = Clock()
    breaker = AppendBreaker(first_open=1.0, max_open=3.0, clock=clock)
    breaker.failed(False)
    waits = []
    for _ in range(4):
        clock.now += 100
        assert breaker.admit() is True
        breaker.failed(True)
        with pytest.raises(de.EventLogUnavailable) as refused:
            breaker.admit()
        waits.append(refused.value.retry_after)
    assert waits == [2.0, 3.0, 3.0, 3.0]
    clock.now += 100
    assert breaker.admit() is True
    breaker.succeeded(True)
    breaker.failed(False)
    with pytest.raises(de.EventLogUnavailable) as refused:
        breaker.admit()
    assert refused.value.retry_after == 1.0


def test_failures_of_appends_sent_before_it_opened_do_not_extend_the_wait():
    clock = Clock()
    breaker = AppendBreaker(first_open=1.0, clock=clock)
    breaker.failed(False)
    clock.now += 0.9
    breaker.failed(False)  # another append from before, failing late
    clock.now += 0.1
    assert breaker.admit() is True


def test_a_trial_cut_short_by_its_callers_deadline_hands_the_trial_to_the_next_call():
    clock = Clock()
    breaker = AppendBreaker(first_open=1.0, clock=clock)
    breaker.failed(False)
    clock.now += 1.0
    assert breaker.admit() is True
    breaker.gave_up(True)
    assert breaker.state is BreakerState.OPEN
    assert breaker.admit() is True  # at once, and the wait did not double
    breaker.failed(True)
    with pytest.raises(de.EventLogUnavailable) as refused:
        breaker.admit()
    assert refused.value.retry_after == 2.0


def test_a_confirmed_append_from_before_closes_it_early():
    breaker = AppendBreaker(clock=Clock())
    breaker.failed(False)
    breaker.succeeded(False)
    assert breaker.admit() is False


def test_refusal_is_unavailable_with_a_stable_reason_and_retry_info_in_doubt_names_the_message():
    refused = to_rpc_status(de.EventLogUnavailable("not accepted", retry_after=1.5))
    assert refused.code == grpc.StatusCode.UNAVAILABLE.value[0]
    kinds = {d.TypeName(): d for d in refused.details}
    info = error_details_pb2.ErrorInfo()
    kinds["google.rpc.ErrorInfo"].Unpack(info)
    assert info.reason == "EVENT_LOG_UNAVAILABLE" and info.metadata["retry_after_ms"] == "1501"
    retry = error_details_pb2.RetryInfo()
    kinds["google.rpc.RetryInfo"].Unpack(retry)
    assert retry.retry_delay.ToMilliseconds() == 1501

    doubt = to_rpc_status(de.AcceptanceInDoubt("in doubt", metadata={"message_id": "m1"}))
    assert doubt.code == grpc.StatusCode.UNAVAILABLE.value[0]
    doubt.details[0].Unpack(info)
    assert info.reason == "ACCEPTANCE_IN_DOUBT" and info.metadata["message_id"] == "m1"
    assert not any(d.Is(error_details_pb2.RetryInfo.DESCRIPTOR) for d in doubt.details)
