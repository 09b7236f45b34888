"""LaneSemaphore: HIGH waiters first, arrival order within a lane, permits never lost."""

import asyncio

import pytest

from smsgw.lanes import Lane, LaneSemaphore, lane_of
from smsgw.v1 import message_pb2 as mp


def test_the_lane_of_each_priority() -> None:
    assert lane_of(mp.MessagePriority.MESSAGE_PRIORITY_HIGH) is Lane.HIGH
    assert lane_of(mp.MessagePriority.MESSAGE_PRIORITY_NORMAL) is Lane.NORMAL
    assert lane_of(mp.MessagePriority.MESSAGE_PRIORITY_UNSPECIFIED) is Lane.NORMAL
    assert lane_of(99) is Lane.NORMAL


async def test_a_high_waiter_goes_before_every_normal_one_already_waiting() -> None:
    gate = LaneSemaphore(1)
    order: list[str] = []

    async def take(name: str, lane: Lane) -> None:
        async with gate.held(lane):
            order.append(name)
            await asyncio.sleep(0)

    await gate.acquire()  # busy: everyone below waits
    tasks = [asyncio.create_task(take(f"bulk{i}", Lane.NORMAL)) for i in range(5)]
    await asyncio.sleep(0)
    tasks.append(asyncio.create_task(take("otp1", Lane.HIGH)))
    tasks.append(asyncio.create_task(take("otp2", Lane.HIGH)))
    await asyncio.sleep(0)
    assert gate.waiting() == 7 and gate.waiting(Lane.HIGH) == 2
    gate.release()
    await asyncio.gather(*tasks)
    assert order == ["otp1", "otp2", "bulk0", "bulk1", "bulk2", "bulk3", "bulk4"]
    assert not gate.locked()


async def test_a_newcomer_cannot_take_a_released_permit_from_a_waiter() -> None:
    gate = LaneSemaphore(1)
    await gate.acquire()
    waiter = asyncio.create_task(gate.acquire(Lane.NORMAL))
    await asyncio.sleep(0)
    gate.release()  # handed to the waiter, not left free
    assert gate.locked()
    newcomer = asyncio.create_task(gate.acquire(Lane.HIGH))
    await asyncio.sleep(0)
    assert waiter.done() and not newcomer.done()
    gate.release()
    await newcomer
    gate.release()
    assert not gate.locked()


async def test_a_cancelled_waiter_leaves_no_hole_and_loses_no_permit() -> None:
    gate = LaneSemaphore(2)
    await gate.acquire()
    await gate.acquire()
    cancelled = asyncio.create_task(gate.acquire(Lane.HIGH))
    behind = asyncio.create_task(gate.acquire(Lane.NORMAL))
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    gate.release()
    await asyncio.wait_for(behind, 1)  # the permit went past the cancelled waiter
    # Granted and cancelled in the same turn: the permit is handed on, not lost.
    granted_then_cancelled = asyncio.create_task(gate.acquire())
    last = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    gate.release()
    granted_then_cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await granted_then_cancelled
    await asyncio.wait_for(last, 1)
    gate.release()
    gate.release()
    assert not gate.locked() and gate.waiting() == 0


def test_a_negative_value_is_refused() -> None:
    with pytest.raises(ValueError):
        LaneSemaphore(-1)
