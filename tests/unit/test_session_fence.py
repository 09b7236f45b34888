"""A process that stood still past its group session stops acting on its partitions."""

from __future__ import annotations

import asyncio

import pytest

from smsgw.kafka.session_fence import SessionFence, SessionLost


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_a_long_start_up_before_the_fence_runs_is_not_taken_for_a_freeze():
    # carrier-adapter's start-up (binds, the consumer's join) took 11 s on Tansu in CI: the
    # restarted replica's first submit must not find its session lost.
    clock = _Clock()
    fence = SessionFence(6.0, tick=0.01, clock=clock)
    clock.now += 11.0
    fence.check()
    stop = asyncio.Event()
    ticking = asyncio.create_task(fence.run(stop))
    await asyncio.sleep(0.03)
    fence.check()
    assert not ticking.done()
    stop.set()
    await asyncio.wait_for(ticking, 1.0)


async def test_a_member_that_ticked_within_its_session_may_act_and_one_that_stood_still_longer_may_not():
    clock = _Clock()
    fence = SessionFence(6.0, tick=0.01, clock=clock)
    stop = asyncio.Event()
    ticking = asyncio.create_task(fence.run(stop))
    await asyncio.sleep(0.03)
    clock.now += 5.9
    fence.check()  # a slow moment, not a lost session
    clock.now += 0.2  # 6.1 s since the last tick: the brokers have moved its partitions
    with pytest.raises(SessionLost, match="stood still for 6.1 s"):
        fence.check()
    stop.set()
    await asyncio.gather(ticking, return_exceptions=True)


async def test_the_ticks_keep_a_running_member_in_and_end_the_run_after_a_freeze():
    clock = _Clock()
    fence = SessionFence(6.0, tick=0.01, clock=clock)
    stop = asyncio.Event()
    ticking = asyncio.create_task(fence.run(stop))
    for _ in range(5):
        clock.now += 1.0  # a second between ticks, five times: well within the session
        await asyncio.sleep(0.02)
    fence.check()
    assert not ticking.done()
    clock.now += 7.0  # frozen (SIGSTOP) between two ticks
    fence_error = None
    try:
        fence.check()
    except SessionLost as error:
        fence_error = error
    assert fence_error is not None, "the action right after the wake is refused, before any tick runs"
    with pytest.raises(SessionLost):
        await asyncio.wait_for(ticking, 1.0)
    stop.set()
