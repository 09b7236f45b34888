"""Which submit attempts are written to the log, and the in-doubt policy's configuration."""

from __future__ import annotations

import pytest

from smsgw.v1 import events_pb2 as ev
from smsgw_carrier_adapter.attempt_record import UnrecordedAttempts, attempt_is_recorded
from smsgw_carrier_adapter.carrier import CarrierUnavailable
from smsgw_carrier_adapter.carriers import CarrierConfigError, load_carriers
from smsgw_carrier_adapter.smpp.config import SmppCarrier


def test_the_first_five_attempts_and_then_powers_of_two_are_recorded() -> None:
    recorded = [n for n in range(1, 1025) if attempt_is_recorded(n)]
    assert recorded == [1, 2, 3, 4, 5, 8, 16, 32, 64, 128, 256, 512, 1024]


def test_an_hour_long_outage_writes_a_handful_of_events_per_message() -> None:
    # The dispatcher's backoff tops out at 5 s: an hour is ~720 attempts. Each power of two from 8
    # on also writes the held-back attempt before it (7, 15, ... with the others summed up).
    own = sum(attempt_is_recorded(n) for n in range(1, 721))
    held_before = sum(attempt_is_recorded(n + 1) and not attempt_is_recorded(n) for n in range(1, 720))
    assert (own, held_before) == (12, 7)


def test_carrier_unavailable_is_not_in_doubt_unless_said() -> None:
    plain = CarrierUnavailable("down")
    assert (plain.reason, plain.in_doubt, plain.retry_after) == ("CARRIER_UNAVAILABLE", False, None)
    cut = CarrierUnavailable("cut", reason="CONNECTION_LOST", in_doubt=True)
    assert cut.in_doubt and cut.reason == "CONNECTION_LOST" and str(cut) == "cut"


def test_in_doubt_policy_is_retry_by_default_and_validated() -> None:
    base = '{"carriers": [{"name": "s", "kind": "smpp", "system_id": "a", "password": "b"%s}]}'
    default, failing = load_carriers(base % "").carriers[0], load_carriers(base % ', "in_doubt": "fail"').carriers[0]
    assert isinstance(default, SmppCarrier) and isinstance(failing, SmppCarrier)
    assert (default.in_doubt, failing.in_doubt) == ("retry", "fail")
    with pytest.raises(CarrierConfigError, match="in_doubt"):
        load_carriers(base % ', "in_doubt": "maybe"')


def _failed(attempt: int, reason: str = "NOT_CONNECTED", in_doubt: bool = False) -> ev.SubmitAttemptFailed:
    return ev.SubmitAttemptFailed(carrier="c", attempt=attempt, reason=reason, in_doubt=in_doubt)


def test_attempts_held_back_are_summed_up_on_the_next_one_written() -> None:
    held = UnrecordedAttempts()
    assert not held and held.last() is None
    held.hold(_failed(6, "THROTTLED"))
    held.hold(_failed(7, in_doubt=True))
    assert held
    written = held.summed_into(_failed(8))
    assert (written.attempt, written.unrecorded_attempts) == (8, 2)
    assert dict(written.unrecorded_reasons) == {"THROTTLED": 1, "NOT_CONNECTED": 1} and written.unrecorded_in_doubt
    assert not held, "empty again once summed up"
    assert held.summed_into(_failed(9)).unrecorded_attempts == 0


def test_the_newest_held_attempt_is_written_with_the_others_summed_up_on_it() -> None:
    held = UnrecordedAttempts()
    for attempt in (9, 10, 11):
        held.hold(_failed(attempt))
    last = held.last()
    assert last is not None and (last.attempt, last.unrecorded_attempts) == (11, 2)
    assert dict(last.unrecorded_reasons) == {"NOT_CONNECTED": 2} and not last.unrecorded_in_doubt
    assert held.last() is None
