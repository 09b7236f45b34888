"""Per-account limits: the token bucket (GCRA) and the daily quota, folded like the log folds them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from smsgw.domain import errors as de
from smsgw.domain.limits import AccountUsage, Limits

T0 = datetime(2026, 12, 3, 23, 59, 50, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_burst_then_the_sustained_rate_with_the_wait_named():
    usage, limits = AccountUsage(), Limits(messages_per_second=10, burst=5)
    for _ in range(5):
        usage.admit("acme", at(0), limits)
    with pytest.raises(de.RateLimited) as limited:
        usage.admit("acme", at(0), limits)
    assert limited.value.retry_after == pytest.approx(0.1, abs=1e-5)
    assert limited.value.metadata == {"limit_per_second": "10", "burst": "5", "retry_after_ms": "100"}
    assert "10 messages a second (bursts of 5)" in limited.value.message
    usage.admit("acme", at(0.1), limits)  # one token back after 1/rate
    with pytest.raises(de.RateLimited):
        usage.admit("acme", at(0.1), limits)
    usage.admit("acme", at(10), limits)  # quiet long enough: the whole burst again
    for _ in range(4):
        usage.admit("acme", at(10), limits)
    usage.admit("globex", at(10), limits)  # accounts do not share a bucket


def test_no_burst_given_means_one_seconds_worth():
    usage, limits = AccountUsage(), Limits(messages_per_second=3)
    for _ in range(3):
        usage.admit("acme", at(0), limits)
    with pytest.raises(de.RateLimited):
        usage.admit("acme", at(0), limits)
    assert Limits(messages_per_second=0.5).bucket == 1


def test_the_daily_quota_counts_utc_days_and_says_when_it_resets():
    usage, limits = AccountUsage(), Limits(messages_per_day=2)
    usage.admit("acme", at(0), limits)
    usage.admit("acme", at(1), limits)
    with pytest.raises(de.DailyQuotaExceeded) as exhausted:
        usage.admit("acme", at(2), limits)
    assert exhausted.value.retry_after == pytest.approx(8, abs=1e-5)  # 23:59:52 -> midnight UTC
    usage.admit("acme", at(11), limits)  # 00:00:01, a new day


def test_what_other_replicas_accepted_counts_as_it_comes_from_the_log():
    # Two replicas, each folding the other's messages from the log: together they keep the limit.
    limits = Limits(messages_per_second=2, burst=2)
    one, two = AccountUsage(), AccountUsage()
    one.admit("acme", at(0), limits)
    two.record("acme", at(0), limits)  # replica two reads replica one's message
    two.admit("acme", at(0), limits)
    one.record("acme", at(0), limits)
    for replica in (one, two):
        with pytest.raises(de.RateLimited):
            replica.admit("acme", at(0), limits)


def test_a_refund_gives_back_what_an_unaccepted_message_took():
    usage, limits = AccountUsage(), Limits(messages_per_second=1, burst=1, messages_per_day=1)
    usage.admit("acme", at(0), limits)
    usage.refund("acme", at(0), limits)
    usage.admit("acme", at(0), limits)


def test_unset_limits_take_the_defaults_and_negative_ones_are_refused():
    assert Limits(messages_per_day=5).over(Limits(7, 9, 100)) == Limits(7, 9, 5)
    with pytest.raises(de.InvalidArgument):
        Limits(messages_per_second=-1).check()
    AccountUsage().admit("acme", at(0), Limits())  # no limits: always admitted
