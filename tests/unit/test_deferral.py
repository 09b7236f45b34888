"""When a deferred command comes back from the delay topic (services/carrier_adapter/deferral.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smsgw.v1 import carrier_pb2 as cp
from smsgw_carrier_adapter.deferral import CarrierProbes, DelayTiers, Step, laps_for, next_step


def test_each_deferral_waits_twice_as_many_laps_up_to_the_longest_wait():
    assert [laps_for(n, 30, 600) for n in range(1, 8)] == [1, 2, 4, 8, 16, 20, 20]
    assert laps_for(1, 30, 10) == 1, "at least one lap, even when the longest wait is shorter"
    assert laps_for(10_000, 1, 3600) == 3600, "no overflow for a message deferred for weeks"


def test_a_lap_of_no_time_is_refused():
    with pytest.raises(ValueError, match="lap"):
        laps_for(1, 0, 600)


def _command(laps_left: int, expires_at: float | None = None) -> cp.DispatchCommand:
    command = cp.DispatchCommand(command_id="c", message_id="m", carrier="down", laps_left=laps_left)
    if expires_at is not None:
        command.expires_at.FromNanoseconds(int(expires_at * 1e9))
    return command


def test_a_record_waits_one_lap_from_when_it_was_written():
    assert next_step(_command(1), written_at=1000.0, now=1010.0, lap=30) == (Step.WAIT, 1030.0)
    assert next_step(_command(1), written_at=1000.0, now=1030.0, lap=30) == (Step.DISPATCH, 1030.0)


def test_with_laps_left_it_goes_round_again_and_on_its_last_lap_back_to_dispatch():
    assert next_step(_command(3), written_at=1000.0, now=1031.0, lap=30)[0] is Step.AGAIN
    assert next_step(_command(2), written_at=1000.0, now=1031.0, lap=30)[0] is Step.AGAIN
    assert next_step(_command(1), written_at=1000.0, now=1031.0, lap=30)[0] is Step.DISPATCH
    assert next_step(_command(0), written_at=1000.0, now=1031.0, lap=30)[0] is Step.DISPATCH


def test_a_message_whose_validity_ends_within_the_next_lap_goes_back_at_once():
    # The dispatcher expires it then (or sends it, if its carrier is back), not a lap late.
    assert next_step(_command(5, expires_at=1050.0), written_at=1000.0, now=1031.0, lap=30)[0] is Step.DISPATCH
    assert next_step(_command(5, expires_at=1090.0), written_at=1000.0, now=1031.0, lap=30)[0] is Step.AGAIN


@given(
    written=st.lists(st.floats(min_value=0, max_value=1e6), min_size=1, max_size=30),
    now=st.floats(min_value=0, max_value=2e6),
    lap=st.floats(min_value=0.1, max_value=3600),
)
def test_in_a_partition_written_in_order_no_record_is_due_before_one_written_earlier(written, now, lap):
    """What lets the delay topic's reader wait only for a partition's first record: if a record
    is not due yet, no record written after it is due either."""
    written = sorted(written)
    steps = [next_step(_command(1), written_at=w, now=now, lap=lap)[0] for w in written]
    first_waiting = next((i for i, s in enumerate(steps) if s is Step.WAIT), len(steps))
    assert all(s is Step.WAIT for s in steps[first_waiting:])


def test_while_its_carrier_is_down_one_command_a_lap_goes_back_and_the_others_wait_again_doubled():
    probes = CarrierProbes(lap=30, longest=600)
    first, second = _command(1), _command(1)
    second.deferrals = 2
    assert probes.laps_to_hold(first, now=1000.0, down=True) == 0, "the lap's probe goes back"
    assert probes.laps_to_hold(second, now=1001.0, down=True) == 4, "its third deferral's wait: 4 laps"
    assert probes.laps_to_hold(first, now=1029.0, down=True) == 1, "its first deferral's wait: 1 lap"
    assert probes.laps_to_hold(first, now=1030.0, down=True) == 0, "a lap later, the next probe"
    other = _command(1)
    other.carrier = "another"
    assert probes.laps_to_hold(other, now=1030.5, down=True) == 0, "each carrier has its own probe"


def test_a_carrier_that_is_up_gets_every_due_command_back():
    probes = CarrierProbes(lap=30, longest=600)
    assert probes.laps_to_hold(_command(1), now=1000.0, down=True) == 0
    assert [probes.laps_to_hold(_command(1), now=1001.0 + n, down=False) for n in range(5)] == [0] * 5
    assert probes.laps_to_hold(_command(1), now=1010.0, down=True) == 0, "down again: a probe first"


def test_a_held_command_whose_validity_ends_within_the_next_lap_goes_back_to_expire_on_time():
    probes = CarrierProbes(lap=30, longest=600)
    assert probes.laps_to_hold(_command(1), now=1000.0, down=True) == 0  # the probe
    assert probes.laps_to_hold(_command(1, expires_at=1020.0), now=1001.0, down=True) == 0
    assert probes.laps_to_hold(_command(1, expires_at=1100.0), now=1001.0, down=True) == 1


TIERS = DelayTiers({1: "d1", 2: "d2", 4: "d4", 8: "d8", 16: "d16"}, lap=30)


def test_a_wait_goes_to_the_longest_tier_not_above_it():
    assert [TIERS.tier_for(n) for n in range(20)] == [1, 1, 2, 2, 4, 4, 4, 4] + [8] * 8 + [16] * 4
    assert TIERS.topic_for(20) == "d16" and TIERS.tier_of("d4") == 4


def test_a_tier_never_outlasts_the_messages_validity():
    # 16 laps of 30 s asked, 100 s of validity left: the longest tier that comes due before is 2 laps.
    assert TIERS.tier_for(16, validity_left=100) == 2
    assert TIERS.tier_for(16, validity_left=10) == 1, "one lap at the least"
    assert TIERS.tier_for(16, validity_left=480) == 16


def test_the_tiers_need_one_of_one_lap_and_a_lap_of_some_time():
    with pytest.raises(ValueError, match="one lap"):
        DelayTiers({2: "d2"}, lap=30)
    with pytest.raises(ValueError, match="longer than 0"):
        DelayTiers({1: "d1"}, lap=0)


def test_a_record_of_a_longer_tier_is_due_that_many_laps_after_it_was_written():
    assert next_step(_command(4), written_at=1000.0, now=1119.0, lap=30, tier=4) == (Step.WAIT, 1120.0)
    assert next_step(_command(4), written_at=1000.0, now=1120.0, lap=30, tier=4) == (Step.DISPATCH, 1120.0)
    assert next_step(_command(20), written_at=1000.0, now=1120.0, lap=30, tier=4)[0] is Step.AGAIN


def _wait(laps: int, tier: int, lap: float = 30.0) -> tuple[float, list[int]]:
    """Follows a command as DelayedCommands does, from a write of `laps` laps to the tier `tier`,
    each record read the moment it is due: the time until it is dispatched and the tiers it was written to."""
    command, now, written = _command(laps), 0.0, [tier]
    while True:
        step, due = next_step(command, written_at=now, now=now, lap=lap, tier=tier)
        assert step is Step.WAIT
        now = due
        step, _ = next_step(command, written_at=now - lap * tier, now=now, lap=lap, tier=tier)
        if step is Step.DISPATCH:
            return now, written
        command.laps_left -= tier
        tier = TIERS.tier_for(command.laps_left)
        written.append(tier)


@given(laps=st.integers(min_value=1, max_value=500))
def test_a_wait_of_n_laps_lasts_n_laps_in_few_writes(laps):
    waited, written = _wait(laps, TIERS.tier_for(laps))
    assert waited == laps * 30.0
    # One write per 16 laps, and one per tier the rest is made of; one lap at a time was n writes.
    assert len(written) == laps // 16 + bin(laps % 16).count("1"), written


def test_a_record_written_to_the_one_lap_tier_before_the_tiers_still_waits_its_laps():
    # Before the tiers, a wait of n laps was n writes to the one-lap tier with laps_left counting down.
    waited, written = _wait(6, tier=1)
    assert waited == 6 * 30.0 and written == [1, 4, 1]
