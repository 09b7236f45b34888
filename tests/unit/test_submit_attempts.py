"""Which submit attempts are written to the log, and the in-doubt policy's configuration."""

from __future__ import annotations

import pytest

from smsgw_carrier_adapter.carrier import CarrierUnavailable
from smsgw_carrier_adapter.carriers import CarrierConfigError, load_carriers
from smsgw_carrier_adapter.dispatcher import attempt_is_recorded
from smsgw_carrier_adapter.smpp.config import SmppCarrier


def test_the_first_five_attempts_and_then_powers_of_two_are_recorded() -> None:
    recorded = [n for n in range(1, 1025) if attempt_is_recorded(n)]
    assert recorded == [1, 2, 3, 4, 5, 8, 16, 32, 64, 128, 256, 512, 1024]


def test_an_hour_long_outage_writes_a_handful_of_events_per_message() -> None:
    # The dispatcher's backoff tops out at 5 s: an hour is ~720 attempts.
    assert sum(attempt_is_recorded(n) for n in range(1, 721)) == 12


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
