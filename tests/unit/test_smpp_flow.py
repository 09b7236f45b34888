"""SubmitGate: the rate limit, the backpressure pause, and first-come-first-served admission."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from smsgw.lanes import Lane
from smsgw.smpp.flow import SubmitGate, full_jitter

pytestmark = pytest.mark.timeout(60)


def test_full_jitter_stays_within_bounds() -> None:
    for attempt in range(12):
        for _ in range(50):
            delay = full_jitter(attempt, 0.1, 2.0)
            assert 0.1 <= delay <= min(2.0, 0.1 * 2**attempt)


async def test_without_limits_admission_is_immediate() -> None:
    gate = SubmitGate(max_tps=None, pause_min=0.01, pause_max=0.02)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for _ in range(200):
        await gate.admit()
    assert loop.time() - start < 0.2


async def test_rate_spaces_admissions_evenly() -> None:
    gate = SubmitGate(max_tps=50, pause_min=0.01, pause_max=0.02)
    loop = asyncio.get_running_loop()
    times = []
    for _ in range(26):
        await gate.admit()
        times.append(loop.time())
    # 25 gaps of 20 ms: no burst beyond the one token the bucket holds.
    assert times[-1] - times[0] >= 25 / 50 * 0.95
    assert times[-1] - times[0] < 25 / 50 + 0.3
    assert min(b - a for a, b in itertools.pairwise(times)) > 0.015


async def test_a_replica_takes_its_share_of_the_carriers_rate() -> None:
    gate = SubmitGate(max_tps=60, pause_min=0.01, pause_max=0.02)
    gate.share(1 / 3)  # one of three replicas: 20 a second
    assert gate.max_tps == pytest.approx(20)
    loop = asyncio.get_running_loop()
    await gate.admit()
    start = loop.time()
    for _ in range(10):
        await gate.admit()
    assert loop.time() - start >= 10 / 20 * 0.95
    gate.share(1.0)
    assert gate.max_tps == 60
    with pytest.raises(ValueError, match="share must be"):
        gate.share(0)
    unlimited = SubmitGate(max_tps=None, pause_min=0.01, pause_max=0.02)
    unlimited.share(0.5)
    assert unlimited.max_tps is None


async def test_concurrent_waiters_pass_in_arrival_order() -> None:
    gate = SubmitGate(max_tps=200, pause_min=0.01, pause_max=0.02)
    order: list[int] = []

    async def one(index: int) -> None:
        await gate.admit()
        order.append(index)

    await asyncio.gather(*(one(i) for i in range(30)))
    assert order == list(range(30))


async def test_a_high_lane_submit_passes_the_normal_ones_waiting_for_tokens() -> None:
    gate = SubmitGate(max_tps=100, pause_min=0.01, pause_max=0.02)
    order: list[str] = []

    async def one(name: str, lane: Lane) -> None:
        await gate.admit(lane)
        order.append(name)

    bulk = [asyncio.create_task(one(f"bulk{i}", Lane.NORMAL)) for i in range(20)]
    await asyncio.sleep(0.025)  # a few bulk submits have gone; the rest wait for tokens
    otp = asyncio.create_task(one("otp", Lane.HIGH))
    await asyncio.gather(otp, *bulk)
    # ~3 bulk submits went in the first 25 ms, and the one holding the gate (sleeping for its
    # token) goes before the OTP; the other 16 wait behind it (first come, first served: 20th).
    assert order.index("otp") <= 5
    assert [name for name in order if name != "otp"] == [f"bulk{i}" for i in range(20)]


async def test_pause_holds_everyone_then_resumes() -> None:
    gate = SubmitGate(max_tps=None, pause_min=0.15, pause_max=0.15)
    loop = asyncio.get_running_loop()
    await gate.admit()
    delay = gate.pause()
    assert delay == pytest.approx(0.15)
    start = loop.time()
    await asyncio.gather(*(gate.admit() for _ in range(5)))
    assert loop.time() - start >= 0.14


async def test_pause_grows_while_the_smsc_keeps_refusing_and_resets() -> None:
    gate = SubmitGate(max_tps=None, pause_min=0.01, pause_max=10.0)
    ceilings = []
    for attempt in range(6):
        ceilings.append(0.01 * 2**attempt)
        assert gate.pause() <= ceilings[-1]
    gate.accepted()
    assert gate.pause() == pytest.approx(0.01)


async def test_current_tps_counts_the_last_ten_seconds() -> None:
    gate = SubmitGate(max_tps=None, pause_min=0.01, pause_max=0.02)
    assert gate.current_tps() == 0
    for _ in range(35):
        await gate.admit()
    assert gate.current_tps() == pytest.approx(3.5)


def test_rejects_a_non_positive_rate() -> None:
    with pytest.raises(ValueError):
        SubmitGate(max_tps=0, pause_min=0.01, pause_max=0.02)
