"""Retry delays and the per-endpoint circuit breaker (pure: time is passed in)."""

from __future__ import annotations

import pytest

from smsgw_receipt.webhooks.breaker import CLOSED, HALF_OPEN, OPEN, BreakerPolicy, CircuitBreaker
from smsgw_receipt.webhooks.delivery import RetryPolicy


def test_delays_double_up_to_the_cap_without_jitter():
    policy = RetryPolicy(base_delay=1.0, max_delay=10.0, jitter=0.0)
    assert [policy.delay(n, rand=0.7) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


@pytest.mark.parametrize("jitter", [0.25, 0.5, 1.0])
def test_jitter_only_shortens_a_delay_by_at_most_its_share(jitter):
    policy = RetryPolicy(base_delay=2.0, max_delay=60.0, jitter=jitter)
    for attempt in range(1, 10):
        nominal = min(60.0, 2.0 * 2 ** (attempt - 1))
        assert policy.delay(attempt, rand=0.0) == nominal
        assert policy.delay(attempt, rand=0.999999) == pytest.approx(nominal * (1 - jitter), abs=1e-3)


@pytest.mark.parametrize("bad", [dict(max_attempts=0), dict(jitter=1.5), dict(base_delay=5, max_delay=1)])
def test_nonsense_retry_policies_are_refused(bad):
    with pytest.raises(ValueError):
        RetryPolicy(**bad)


def test_consecutive_failures_open_the_circuit_and_a_success_resets_the_count():
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=3, open_seconds=10))
    breaker.record_failure(0)
    breaker.record_failure(0)
    breaker.record_success()
    breaker.record_failure(0)
    breaker.record_failure(0)
    assert breaker.state(0) == CLOSED and breaker.allow(0)
    breaker.record_failure(1)
    assert breaker.state(1) == OPEN
    assert not breaker.allow(5) and breaker.seconds_until_probe(5) == 6


def test_after_the_open_period_one_probe_goes_out_and_its_success_closes_the_circuit():
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=1, open_seconds=10))
    breaker.record_failure(0)
    assert breaker.state(10) == HALF_OPEN
    assert breaker.allow(10) is True  # the probe
    assert breaker.allow(10.1) is False  # only one at a time
    breaker.record_success()
    assert breaker.state(10.2) == CLOSED and breaker.allow(10.2)


def test_a_failed_probe_opens_the_circuit_for_another_period():
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=1, open_seconds=10))
    breaker.record_failure(0)
    assert breaker.allow(12)
    breaker.record_failure(12.5)
    assert breaker.state(12.5) == OPEN and not breaker.allow(22) and breaker.allow(22.5)


def test_late_failures_of_requests_sent_before_opening_do_not_extend_the_open_period():
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=2, open_seconds=10))
    breaker.record_failure(0)
    breaker.record_failure(0)
    breaker.record_failure(8)
    assert breaker.state(10) == HALF_OPEN
