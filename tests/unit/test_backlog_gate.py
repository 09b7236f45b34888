"""The backlog gate: NORMAL and LOW sends wait while routing works through a backlog at its limit,
stop waiting once the backlog stands still (routing stopped), and never wait past their time."""

from __future__ import annotations

import asyncio
import time

from smsgw_intake.backlog_gate import BacklogGate


class Backlog:
    """Routing's backlog (messages QUEUED) as the gate sees it, moved by hand."""

    def __init__(self, size: int) -> None:
        self.size = size

    def gate(self, limit: int = 10, max_wait: float = 0.5, stall_after: float = 5.0) -> BacklogGate:
        return BacklogGate(lambda: self.size, limit=limit, max_wait=max_wait, stall_after=stall_after)

    def change(self, gate: BacklogGate, by: int) -> None:
        """The QUEUED index grew (appends) or shrank (routing took messages) by `by`."""
        self.size += by
        gate.changed()


async def test_below_the_limit_a_send_goes_on_and_its_messages_count_until_released():
    backlog = Backlog(5)
    gate = backlog.gate()
    assert await gate.admit(4, None)  # 5 + 4 < 10
    assert await gate.admit(1, None)  # 9 < 10; now 10
    assert not await gate.admit(1, 0.05), "5 queued + 5 reserved is the limit"
    gate.release(5)  # those appends are done (refused here: the index did not grow)
    assert await gate.admit(1, None)
    assert gate.waited == 1 and gate.refused == 1


async def test_at_the_limit_a_send_waits_until_routing_takes_messages():
    backlog = Backlog(0)
    gate = backlog.gate()
    backlog.change(gate, 11)  # a campaign accepted: over the limit
    waiting = asyncio.create_task(gate.admit(1, None))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    backlog.change(gate, -2)  # routing took two: 9, room for one
    assert await asyncio.wait_for(waiting, 1)
    assert gate.waited == 1 and gate.refused == 0


async def test_no_room_within_the_wait_or_the_deadline_is_a_refusal():
    backlog = Backlog(0)
    gate = backlog.gate(max_wait=0.05)
    backlog.change(gate, 20)
    started = time.monotonic()
    assert not await gate.admit(1, None)  # max_wait
    assert 0.04 <= time.monotonic() - started < 0.5
    assert not await gate.admit(1, 0.0)  # the caller's deadline
    assert gate.refused == 2


async def test_a_backlog_that_stands_still_holds_no_send_and_holds_again_once_it_moves():
    backlog = Backlog(0)
    gate = backlog.gate(stall_after=0.1)
    backlog.change(gate, 50)  # routing stopped: 50 waiting, none taken
    assert not await gate.admit(1, 0.0)  # just grown past the limit: routing may be at it
    await asyncio.sleep(0.15)  # nothing taken for longer than stall_after
    assert await gate.admit(1, 0.0)
    backlog.change(gate, -1)  # routing is back and taking messages
    assert not await gate.admit(1, 0.0)


async def test_a_waiting_send_goes_on_when_the_backlog_stops_moving():
    backlog = Backlog(0)
    gate = backlog.gate(max_wait=2.0, stall_after=0.05)
    backlog.change(gate, 50)
    started = time.monotonic()
    assert await asyncio.wait_for(gate.admit(1, None), 1)  # goes on once 0.05 s pass without a change
    assert time.monotonic() - started >= 0.04
    assert gate.waited == 1 and gate.refused == 0


async def test_limit_zero_is_no_gate():
    backlog = Backlog(0)
    gate = backlog.gate(limit=0)
    backlog.change(gate, 10**6)
    assert await gate.admit(1000, 0.0)
    assert gate.waited == 0


async def test_the_limit_grows_with_routings_pace():
    """A deployment that routes more a second is held at a larger backlog: `seconds` of what
    routing took over the last 10 s, when that is more than `limit`."""
    backlog = Backlog(0)
    gate = BacklogGate(lambda: backlog.size, limit=10, seconds=1.0, max_wait=0.05)
    backlog.size = 300
    for _ in range(200):  # routing took 200 messages: 20 a second over the 10 s window
        backlog.size -= 1
        gate.changed(taken=True)
    assert gate.current_limit() == 20.0
    assert not await gate.admit(1, 0.0)  # 100 waiting: over 20
    for _ in range(1000):  # 1,200 taken: 120 a second
        backlog.size += 1
        gate.changed()
        backlog.size -= 1
        gate.changed(taken=True)
    assert gate.current_limit() == 120.0
    assert await gate.admit(1, 0.0)  # 100 waiting: under 120
    # One taken on this replica's third of the partitions: three over all of them, 0.3 a second.
    scaled = BacklogGate(lambda: backlog.size, limit=1, seconds=10.0, scale=lambda: 3.0)
    scaled.changed(taken=True)
    assert abs(scaled.current_limit() - 3.0) < 1e-9


async def test_a_send_cancelled_as_room_appears_is_cancelled():
    """The caller gone (its deadline, a disconnect) in the same turn as the backlog moves: the
    cancellation wins. Python 3.11's wait_for returned the wake-up instead, and the send went on."""
    backlog = Backlog(0)
    gate = backlog.gate(max_wait=5.0)
    backlog.change(gate, 11)
    waiting = asyncio.create_task(gate.admit(1, None))
    await asyncio.sleep(0.05)
    backlog.change(gate, -2)  # room: wakes the waiter...
    waiting.cancel()  # ...and the caller goes, before the waiter runs again
    try:
        await waiting
    except asyncio.CancelledError:
        pass
    else:
        raise AssertionError("the cancelled send was admitted")
    assert waiting.cancelled()
