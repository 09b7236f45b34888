"""Priority lanes: which lane a message waits in, and a semaphore that serves lanes in order.

A message waits for a carrier in a few places (the adapter's per-carrier share of tasks, an SMPP
bind's window and its rate gate, an HTTP provider's concurrent requests). At each, a HIGH message
(one-time passwords, alerts) goes before every NORMAL one still waiting, so a bulk campaign
queued for a carrier delays an OTP by one message at most, not by the campaign. Within a lane the
order is first come, first served, as before. Pure asyncio, no I/O.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from enum import IntEnum

from smsgw.v1 import message_pb2 as mp


class Lane(IntEnum):
    """Lower values are served first."""

    HIGH = 0
    NORMAL = 1


def lane_of(priority: int) -> Lane:
    """The lane of a `MessagePriority` (unset and unknown values wait in NORMAL)."""
    return Lane.HIGH if priority == mp.MessagePriority.MESSAGE_PRIORITY_HIGH else Lane.NORMAL


#: The Kafka header intake puts on a HIGH message's MessageQueued record, so that routing can take
#: it ahead of the rest of a poll without decoding every record (PartitionedLoop's `lane`).
LANE_HEADER = "smsgw-lane"
_HIGH_HEADER = (LANE_HEADER, b"high")


def lane_headers(priority: int) -> list[tuple[str, bytes]]:
    """The headers that mark a record of a message of this priority (none for NORMAL)."""
    return [_HIGH_HEADER] if lane_of(priority) is Lane.HIGH else []


def is_high_lane(headers) -> bool:
    """The record carries the HIGH lane's header (`lane_headers`)."""
    return bool(headers) and _HIGH_HEADER in headers


class LaneSemaphore:
    """A semaphore whose waiters are woken HIGH lane first, then in arrival order.

    A released permit is handed straight to the next waiter (never left for a newcomer to take),
    so a NORMAL caller arriving later cannot overtake a waiting HIGH one. `LaneSemaphore(1)` is
    a lock with the same order."""

    def __init__(self, value: int = 1) -> None:
        if value < 0:
            raise ValueError("value must be at least 0")
        self._value = value
        self._waiters: tuple[deque[asyncio.Future[None]], ...] = tuple(deque() for _ in Lane)

    def waiting(self, lane: Lane | None = None) -> int:
        """Callers waiting now (in `lane`, or in every lane)."""
        queues = self._waiters if lane is None else (self._waiters[lane],)
        return sum(1 for queue in queues for future in queue if not future.done())

    def locked(self) -> bool:
        return self._value == 0

    async def acquire(self, lane: Lane = Lane.NORMAL) -> None:
        if self._value > 0 and not self.waiting():
            self._value -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._waiters[lane]
        queue.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # handed a permit as we were cancelled: hand it on
            else:
                try:
                    queue.remove(future)
                except ValueError:
                    pass
            raise

    def release(self) -> None:
        for queue in self._waiters:
            while queue:
                future = queue.popleft()
                if not future.done():
                    future.set_result(None)
                    return
        self._value += 1

    @asynccontextmanager
    async def held(self, lane: Lane = Lane.NORMAL) -> AsyncIterator[None]:
        await self.acquire(lane)
        try:
            yield
        finally:
            self.release()
