"""Backpressure at acceptance: NORMAL and LOW sends wait while routing works through a backlog.

The messages QUEUED (accepted to be sent now, not yet taken by routing) are routing's backlog;
intake knows its size from its QUEUED index (this replica's appends at once, the others' as its
projector writes them). Accepting faster than the pipeline can send only lengthens that
backlog, and on a machine without spare CPU the acceptance itself takes the CPU the pipeline
needs: every message behind waits longer, and an OTP (HIGH) waits behind the whole backlog of
its partition, since routing reads a partition in order (docs/benchmarks.md, "priority lanes").

So while the backlog is at its limit and routing is working through it, a send of NORMAL or
LOW messages waits for room, at most `max_wait` seconds and never past its call's deadline;
then it is refused with QUEUE_FULL and nothing is appended (the client retries after a
backoff). HIGH sends never wait. The limit is `limit` messages, or `seconds` of what routing
took from the backlog a second over the last 10 s if that is more, so a deployment that routes
10,000 messages a second is not held by a backlog that is a fifth of a second of its work. A
backlog at the limit that has not shrunk for `stall_after` seconds is taken as routing stopped
(restarting, or down) and holds no send: the event log keeps what is accepted until routing is
back, which is what it is for, and meanwhile acceptance takes no CPU from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from smsgw.recent_rate import RecentRate


class BacklogGate:
    def __init__(
        self,
        backlog: Callable[[], float],
        *,
        limit: int,
        seconds: float = 1.0,
        max_wait: float = 5.0,
        stall_after: float = 2.0,
        scale: Callable[[], float] = lambda: 1.0,
    ) -> None:
        #: Routing's backlog now (messages QUEUED) on the partitions this replica sees; `scale`
        #: makes it, and what routing takes from it, all of them.
        self._seen_backlog = backlog
        #: The least backlog that holds sends, in messages (0: no gate) ...
        self.limit = limit
        #: ... and in seconds of routing's recent pace, if that is more.
        self.seconds = seconds
        #: Messages routing took from the backlog, on the partitions this replica sees.
        self._taken = RecentRate()
        self._scale = scale
        self.max_wait = max_wait
        self.stall_after = stall_after
        #: Messages admitted past the gate whose appends are not in the QUEUED index yet.
        self._reserved = 0
        self._last_size = 0.0
        #: When the backlog last shrank or was below the limit: routing is moving.
        self._last_progress = time.monotonic()
        self._room = asyncio.Event()
        self._waiting = 0
        #: Sends that waited, and those refused after waiting (metrics).
        self.waited = 0
        self.refused = 0

    def changed(self, taken: bool = False) -> None:
        """The QUEUED index changed (`taken`: a message left it, routing took it): notes whether
        routing moved and wakes the waiting sends when there is room."""
        if self.limit <= 0:
            return
        if taken:
            self._taken.mark()
        size = self._backlog()
        if size < self._last_size or size + self._reserved < self.limit or size + self._reserved < self.current_limit():
            self._last_progress = time.monotonic()
        self._last_size = size
        if self._waiting and not self._full():
            self._room.set()

    def _backlog(self) -> float:
        return self._seen_backlog() * self._scale()

    def current_limit(self) -> float:
        """The backlog, in messages, that holds sends now."""
        return max(float(self.limit), self._taken.per_second() * self._scale() * self.seconds)

    def _full(self) -> bool:
        if self.limit <= 0 or self._backlog() + self._reserved < self.current_limit():
            return False
        return time.monotonic() - self._last_progress <= self.stall_after

    async def admit(self, count: int, within: float | None) -> bool:
        """Room for `count` messages (reserved until `release`); False when none came within
        `max_wait` or `within` (the seconds left of the caller's deadline)."""
        if self._full():
            wait = self.max_wait if within is None else min(self.max_wait, within)
            self.waited += 1
            if not await self._wait_for_room(wait):
                self.refused += 1
                return False
        if self._backlog() + self._reserved < self.current_limit():
            self._last_progress = time.monotonic()  # below the limit up to this send
        self._reserved += count
        return True

    def release(self, count: int) -> None:
        """The appends of `count` admitted messages are done: in the QUEUED index, or refused."""
        self._reserved = max(0, self._reserved - count)
        if self._waiting and not self._full():
            self._room.set()

    async def _wait_for_room(self, wait: float) -> bool:
        deadline = time.monotonic() + wait
        self._waiting += 1
        try:
            while self._full():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._room.clear()
                # Woken by a change; a backlog that stops moving stops holding sends after
                # `stall_after` without one, so look again at least that often. asyncio.timeout,
                # not wait_for: 3.11's wait_for drops a cancellation that arrives with the wake-up.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(left, self.stall_after)):
                        await self._room.wait()
            return True
        finally:
            self._waiting -= 1

    def instrument(self, meter: Meter) -> None:
        meter.create_observable_gauge(
            "smsgw_intake_routing_backlog",
            callbacks=[self._observe_backlog],
            description="messages QUEUED for routing, as this replica sees them (the backlog gate's measure)",
        )
        meter.create_observable_counter(
            "smsgw_intake_sends_held",
            callbacks=[self._observe_held],
            description="NORMAL/LOW sends that waited at the backlog gate (outcome: accepted after the wait, "
            "or refused QUEUE_FULL)",
        )

    def _observe_backlog(self, _: CallbackOptions) -> Iterator[Observation]:
        yield Observation(self._backlog())

    def _observe_held(self, _: CallbackOptions) -> Iterator[Observation]:
        yield Observation(self.waited - self.refused, {"outcome": "accepted"})
        yield Observation(self.refused, {"outcome": "refused"})
