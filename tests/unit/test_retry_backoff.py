"""The waits between a command's attempts at its carrier: doubling up to a ceiling, jittered
within half to all of the delay, a carrier's Retry-After honoured up to the ceiling."""

from __future__ import annotations

import random

from smsgw_carrier_adapter.retry_backoff import RetryBackoff


def test_waits_double_up_to_the_ceiling_each_drawn_from_half_to_all_of_its_delay():
    backoff = RetryBackoff(first=0.5, ceiling=30.0, rnd=random.Random(7))
    delays = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    for delay in delays:
        wait = backoff.next_wait()
        assert delay / 2 <= wait <= delay, (delay, wait)


def test_the_jitter_spreads_commands_that_failed_together():
    # 200 commands whose carrier failed them at the same moment, third attempt each.
    third = []
    for seed in range(200):
        backoff = RetryBackoff(first=1.0, ceiling=60.0, rnd=random.Random(seed))
        backoff.next_wait()
        backoff.next_wait()
        third.append(backoff.next_wait())
    assert min(third) >= 2.0 and max(third) <= 4.0
    # Spread over the range, not bunched: each quarter of it gets some.
    quarters = {int((w - 2.0) / 0.5) for w in third}
    assert quarters >= {0, 1, 2, 3}


def test_a_carriers_retry_after_is_honoured_up_to_the_ceiling():
    backoff = RetryBackoff(first=0.5, ceiling=30.0, rnd=random.Random(1))
    assert backoff.next_wait(retry_after=12.0) == 12.0  # longer than the delay: the carrier's word
    assert backoff.next_wait(retry_after=600.0) == 30.0  # never past the ceiling
    wait = backoff.next_wait(retry_after=0.1)  # shorter than the delay (2 s now): the delay
    assert 1.0 <= wait <= 2.0
